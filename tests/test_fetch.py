"""Models by URL (acfd.engine.fetch) against HTTP servers the tests start on 127.0.0.1, and the scanner's
``--model URL`` and first-run message end to end."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from acfd.engine.fetch import default_cache_dir, parse_hf, public_spec, resolve_model
from acfd.schemas.artifact import ArtifactError

BODY = bytes(range(256)) * 40  # 10 KiB, not all one byte
SHA = hashlib.sha256(BODY).hexdigest()
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Server:
    """A threaded HTTP server on 127.0.0.1 whose routes are functions of the request handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                server.requests.append((self.command, self.path, dict(self.headers)))
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            do_GET = do_HEAD = _any

            def log_message(self, *a: object) -> None:  # keep pytest's output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def send(body: bytes, length: int | None = None, headers: dict[str, str] | None = None):  # noqa: ANN201
    """A route answering 200 with ``body`` (``length``: the Content-Length claimed; None: len(body))."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        if length != -1:  # -1: no Content-Length (HTTP/1.0: the body ends when the connection closes)
            h.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
            h.wfile.flush()
        h.close_connection = True

    return route


def redirect(to: str):  # noqa: ANN201
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh $XDG_CACHE_HOME; returns the acfd model cache inside it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "acfd" / "models"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_verify_then_offline_cache_hit(server, cache):
    server.routes["/models/model.onnx"] = send(BODY)
    url = server.url("/models/model.onnx") + f"#sha256={SHA.upper()}"  # the hex may be upper case
    assert default_cache_dir() == cache
    path = resolve_model(url, progress=False)
    assert path == cache / SHA / "model.onnx"
    assert path.read_bytes() == BODY
    assert files_under(cache) == [path]  # no temporary file left
    assert [r[:2] for r in server.requests] == [("GET", "/models/model.onnx")]
    server.stop()
    # offline now: the cached file is used without any request
    assert resolve_model(url, progress=False) == path
    assert len(server.requests) == 1
    # a cached file that was damaged is not trusted: with the server gone, that is a one-line error
    path.write_bytes(b"x" + BODY[1:])
    with pytest.raises(ArtifactError, match=r"cannot download model .*connection refused") as e:
        resolve_model(url, progress=False)
    assert "\n" not in str(e.value)
    assert files_under(cache) == []


def test_explicit_cache_dir_and_redirects_followed(server, tmp_path, cache):
    server.routes["/a/model.plan"] = redirect("/b")
    server.routes["/b"] = redirect(server.url("/files/real.bin"))
    server.routes["/files/real.bin"] = send(BODY)
    path = resolve_model(server.url("/a/model.plan") + f"#sha256={SHA}", cache_dir=tmp_path / "c", progress=False)
    # the file is named after the URL asked for (its suffix picks the backend), not the redirect target
    assert path == tmp_path / "c" / SHA / "model.plan" and path.read_bytes() == BODY
    assert not cache.exists()


def test_wrong_hash_is_refused_and_nothing_cached(server, cache):
    server.routes["/model.onnx"] = send(BODY)
    wrong = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(ArtifactError) as e:
        resolve_model(server.url("/model.onnx") + f"#sha256={wrong}", progress=False)
    msg = str(e.value)
    assert SHA in msg and wrong in msg and "refused" in msg and "\n" not in msg
    assert files_under(cache) == [] and not (cache / wrong).exists()


@pytest.mark.parametrize(
    "route,max_bytes,match",
    [
        (None, 1 << 30, r"HTTP 404 Not Found"),
        (send(BODY, length=len(BODY) + 100), 1 << 30, rf"truncated: the server sent {len(BODY)} of {len(BODY) + 100} bytes"),
        (send(BODY), 1000, rf"{len(BODY)} bytes is more than the limit of 1000"),
        (send(BODY, length=-1), 1000, r"more than the limit of 1000 bytes"),  # no Content-Length: stops reading
    ],
    ids=["404", "truncated", "too-large-declared", "too-large-streamed"],
)
def test_download_failures_are_one_line(server, cache, route, max_bytes, match):
    if route is not None:
        server.routes["/m.onnx"] = route
    url = server.url("/m.onnx")
    with pytest.raises(ArtifactError, match=match) as e:
        resolve_model(url + f"#sha256={SHA}", progress=False, max_bytes=max_bytes)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot download model {url}:")
    assert files_under(cache) == [] and not (cache / SHA).exists()


def test_a_stream_without_length_within_the_limit_is_fine(server, cache):
    server.routes["/m.onnx"] = send(BODY, length=-1)
    assert resolve_model(server.url("/m.onnx") + f"#sha256={SHA}", progress=False).read_bytes() == BODY


def test_too_many_redirects(server, cache):
    for i in range(10):
        server.routes[f"/r{i}"] = redirect(f"/r{i + 1}")
    server.routes["/r10"] = send(BODY)
    with pytest.raises(ArtifactError, match=r"too many redirects \(more than 3\)"):
        resolve_model(server.url("/r0") + f"#sha256={SHA}", progress=False, max_redirects=3)
    assert 3 <= sum(p.startswith("/r") for _, p, _ in server.requests) <= 4  # stopped, did not walk all 10
    assert files_under(cache) == []


def test_missing_or_bad_hash(cache):
    for url in ("https://example.org/model.onnx", "https://example.org/model.onnx#"):
        with pytest.raises(ArtifactError) as e:
            resolve_model(url, progress=False)
        msg = str(e.value)
        assert "pins no hash" in msg and "https://example.org/model.onnx#sha256=<64 hex digits>" in msg
        assert "\n" not in msg
    with pytest.raises(ArtifactError, match=r"must be sha256=<64 hex digits>"):
        resolve_model("http://example.org/m.onnx#sha256=abc", progress=False)
    with pytest.raises(ArtifactError, match=r"must be sha256="):
        resolve_model(f"http://example.org/m.onnx#md5={SHA}", progress=False)
    with pytest.raises(ArtifactError, match=r"unsupported URL scheme 'ftp'"):
        resolve_model(f"ftp://example.org/m.onnx#sha256={SHA}", progress=False)
    assert files_under(cache) == []


def test_local_paths_unchanged(tmp_path):
    assert resolve_model("models/model.onnx") == Path("models/model.onnx")
    assert resolve_model(tmp_path / "run") == tmp_path / "run"
    assert resolve_model("/no/such/file.plan") == Path("/no/such/file.plan")  # the loader says it is missing


def test_credentials_are_sent_once_and_never_shown(server, cache):
    seen: list[str | None] = []

    def private(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        if h.headers.get("Authorization") != "Basic dXNlcjpzM2NyM3Q=":  # user:s3cr3t
            h.send_error(401)
            return
        redirect("/public.onnx")(h)

    server.routes["/private.onnx"] = private
    server.routes["/public.onnx"] = send(BODY)
    url = f"http://user:s3cr3t@127.0.0.1:{server.port}/private.onnx#sha256={SHA}"
    assert public_spec(url) == server.url("/private.onnx") + f"#sha256={SHA}"
    assert resolve_model(url, progress=False).read_bytes() == BODY
    assert seen == ["Basic dXNlcjpzM2NyM3Q="]
    # the redirected request does not carry the credentials along
    assert [h.get("Authorization") for _, p, h in server.requests if p == "/public.onnx"] == [None]
    wrong = f"http://user:s3cr3t@127.0.0.1:{server.port}/nothing.onnx#sha256={'0' * 64}"
    with pytest.raises(ArtifactError, match="HTTP 404") as e:
        resolve_model(wrong, progress=False)
    assert "s3cr3t" not in str(e.value) and "user" not in str(e.value)
    assert public_spec("hf://org/repo@main/m.onnx") == "hf://org/repo@main/m.onnx"
    assert public_spec("models/a@b.onnx") == "models/a@b.onnx"


# -- hf:// -------------------------------------------------------------------------------------------


def test_hf_parsing():
    s = parse_hf(f"hf://org/repo@{HF_COMMIT}/sub/dir/model.onnx")
    assert (s.repo_id, s.revision, s.filename, s.sha256) == ("org/repo", HF_COMMIT, "sub/dir/model.onnx", None)
    s = parse_hf(f"hf://gpt2@v1.0/model.onnx#sha256={SHA.upper()}")
    assert (s.repo_id, s.revision, s.filename, s.sha256) == ("gpt2", "v1.0", "model.onnx", SHA)
    with pytest.raises(ArtifactError, match=r"pins no revision: write hf://org/repo@<revision>/model.onnx, best with a commit"):
        parse_hf("hf://org/repo/model.onnx")
    with pytest.raises(ArtifactError, match="pins no revision"):
        parse_hf("hf://org/repo@/model.onnx")
    for bad in ("hf://org/repo@main", "hf://org/repo@main/", "hf://org/repo@main/a/../b.onnx"):
        with pytest.raises(ArtifactError, match="names no file"):
            parse_hf(bad)
    with pytest.raises(ArtifactError, match="not an hf:// URL"):
        parse_hf("hf://@main/model.onnx")
    with pytest.raises(ArtifactError, match=r"must be sha256="):
        parse_hf("hf://org/repo@main/model.onnx#sha256=nothex")


def hub_file(body: bytes, commit: str = HF_COMMIT):  # noqa: ANN201
    """A Hub 'resolve' route: the headers huggingface_hub reads (commit, ETag, size)."""
    return send(body, headers={"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})


def test_hf_download_through_a_local_hub(server, cache):
    server.routes[f"/org/repo/resolve/{HF_COMMIT}/weights/model.onnx"] = hub_file(BODY)
    spec = f"hf://org/repo@{HF_COMMIT}/weights/model.onnx#sha256={SHA}"
    path = resolve_model(spec, progress=False, hf_endpoint=server.url(""))
    assert path.read_bytes() == BODY and path.name == "model.onnx"
    assert (cache / "hf") in path.parents  # under the acfd cache, not ~/.cache/huggingface
    n = len(server.requests)
    assert n >= 1
    server.stop()
    assert resolve_model(spec, progress=False, hf_endpoint=server.url("")) == path  # cached: no request
    assert len(server.requests) == n


def test_hf_branch_is_reused_offline(server, cache):
    server.routes["/org/repo/resolve/v1/model.onnx"] = hub_file(BODY)
    spec = "hf://org/repo@v1/model.onnx"
    path = resolve_model(spec, progress=False, hf_endpoint=server.url(""))
    assert path.read_bytes() == BODY
    server.stop()  # a tag or branch is looked up while the Hub answers; offline, the copy fetched before is used
    assert resolve_model(spec, progress=False, hf_endpoint=server.url("")) == path


def test_hf_failures_are_one_line(server, cache, monkeypatch):
    server.routes[f"/org/repo/resolve/{HF_COMMIT}/model.onnx"] = hub_file(BODY)
    server.routes[f"/org/repo/resolve/{HF_COMMIT}/second.onnx"] = hub_file(BODY)
    base = f"hf://org/repo@{HF_COMMIT}"
    wrong = "f" * 64
    with pytest.raises(ArtifactError, match=f"its SHA-256 is {SHA}, not the {wrong}"):
        resolve_model(f"{base}/model.onnx#sha256={wrong}", progress=False, hf_endpoint=server.url(""))
    with pytest.raises(ArtifactError) as e:
        resolve_model(f"{base}/other.onnx", progress=False, hf_endpoint=server.url(""))
    assert str(e.value).startswith(f"cannot download model {base}/other.onnx:") and "\n" not in str(e.value)
    # $HF_HUB_OFFLINE=1 (read by huggingface_hub when imported): no request, one line
    import huggingface_hub.constants

    n = len(server.requests)
    with monkeypatch.context() as m:
        m.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        with pytest.raises(ArtifactError, match=r"the Hub cannot be reached \(.*\) and the file is not in the cache"):
            resolve_model(f"{base}/second.onnx", progress=False, hf_endpoint=server.url(""))
    assert len(server.requests) == n
    # offline and not cached: one line at once (huggingface_hub alone would retry for ~25 s, logging each try)
    server.stop()
    t0 = time.monotonic()
    with pytest.raises(ArtifactError, match=r"the Hub cannot be reached \(.*refused\) and the file is not in the cache") as e:
        resolve_model(f"{base}/never.onnx", progress=False, hf_endpoint=server.url(""))
    assert time.monotonic() - t0 < 5 and "\n" not in str(e.value)


# -- the scanner ---------------------------------------------------------------------------------------


def test_scan_with_a_model_url(server, cache, tmp_path, monkeypatch):
    from acfd.scanner.cli import main
    from click.testing import CliRunner

    from tests import scan_helpers as H

    monkeypatch.delenv("ACFD_MODEL", raising=False)
    model = H.make_model(tmp_path / "fake.onnx", H.FAKE_BIAS)
    data = model.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    server.routes["/models/fake.onnx"] = send(data)
    video = H.face_video(tmp_path / "face.mp4", n=10, fps=10)
    dbp = tmp_path / "s.sqlite"
    url = f"http://someone:pw@127.0.0.1:{server.port}/models/fake.onnx#sha256={sha}"
    r = CliRunner().invoke(main, [str(video), "--model", url, "--db", str(dbp), "--workers", "0", "-q"])
    assert r.exit_code == 1, r.output  # the face is flagged by the "fake" model
    assert "pw@" not in r.output
    assert (cache / sha / "fake.onnx").read_bytes() == data
    assert H.rows(dbp, "SELECT path FROM models") == [(server.url("/models/fake.onnx") + f"#sha256={sha}",)]
    assert H.rows(dbp, "SELECT label FROM latest_verdicts") == [("fake",)]
    (n_faces,) = H.rows(dbp, "SELECT n_faces FROM videos")[0]
    assert n_faces >= 1
    args = json.loads(H.rows(dbp, "SELECT args FROM scans")[0][0])
    assert args["model"] == server.url("/models/fake.onnx") + f"#sha256={sha}"  # the password is not kept
    # $ACFD_MODEL may be a URL too; now served from the cache with the server stopped
    server.stop()
    monkeypatch.setenv("ACFD_MODEL", url)
    r = CliRunner().invoke(main, [str(video), "--db", str(dbp), "--workers", "0", "-q", "--rescan"])
    assert r.exit_code == 1, r.output
    assert H.rows(dbp, "SELECT COUNT(*) FROM verdicts WHERE identity IS NULL AND label = 'fake'") == [(2,)]


def test_scan_model_failures_are_one_line(tmp_path, cache, monkeypatch):
    from acfd.scanner.cli import main
    from click.testing import CliRunner

    monkeypatch.delenv("ACFD_MODEL", raising=False)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    missing = tmp_path / "nope" / "model.onnx"
    for spec, words in [(str(missing), str(missing)), ("http://127.0.0.1:9/m.onnx", "pins no hash")]:
        r = CliRunner().invoke(main, [str(video), "--model", spec, "--db", str(tmp_path / "d.sqlite")])
        assert r.exit_code == 4, r.output
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "Traceback" not in r.output
    assert not (tmp_path / "d.sqlite").exists()


def test_first_run_without_a_model(tmp_path, monkeypatch):
    import acfd.scanner.pipeline
    from acfd.scanner.cli import main
    from click.testing import CliRunner

    monkeypatch.delenv("ACFD_MODEL", raising=False)
    # an install whose packaged starter model is gone (tests/test_starter.py covers the one that has it)
    monkeypatch.setattr(acfd.scanner.pipeline, "starter_model_path", lambda: tmp_path / "none.onnx")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    r = CliRunner().invoke(main, [str(video), "--db", str(tmp_path / "d.sqlite")])
    assert r.exit_code == 4, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 3, err  # three real lines (not one line of escaped newlines)
    assert "\\x0a" not in r.stderr
    text = " ".join(err)
    for way in ("acfd-train", "make demo", "#sha256="):
        assert way in text
    assert "Missing option" not in r.output and "Usage:" not in r.output
    assert not os.path.exists(tmp_path / "d.sqlite")


def test_hf_hub_that_stalls_after_the_head_ends_in_one_line_within_the_timeout(cache, caplog, capfd):
    """The Hub answers the HEAD, then never sends the file: --timeout bounds each read, no retry chatter."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = listener.accept()
            except OSError:
                continue
            held.append(c)  # kept open: a GET is never answered
            if c.recv(65536).startswith(b"HEAD"):
                c.sendall(
                    b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\nETag: "e"\r\n'
                    + f"X-Repo-Commit: {HF_COMMIT}\r\nConnection: close\r\n\r\n".encode()
                )
                c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        start = time.monotonic()
        with pytest.raises(ArtifactError) as e:
            resolve_model(f"hf://org/repo@{HF_COMMIT}/m.onnx", progress=False, timeout=0.3,
                          hf_endpoint=f"http://127.0.0.1:{port}")
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        t.join()
        listener.close()
        for c in held:
            c.close()
    assert "\n" not in str(e.value) and "the Hub cannot be reached (timed out)" in str(e.value)
    assert elapsed < 15  # huggingface_hub's own 10 s read timeout, retried, took about a minute
    assert "Trying to resume" not in caplog.text + capfd.readouterr().err
