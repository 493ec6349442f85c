"""Model artifacts by URL: ``resolve_model(spec)`` turns a path or a pinned URL into a local file.

Three forms of ``spec``:

* a local path (file or run directory): returned unchanged; the loader checks that it exists;
* ``https://host/path/model.onnx#sha256=HEX`` (or ``http://``): downloaded once into the cache,
  ``$XDG_CACHE_HOME/acfd/models/<sha256>/<file name>`` (default ``~/.cache/acfd/models``), and only
  kept when its SHA-256 is the one the URL pins; later runs use the cached file without any request;
* ``hf://org/repo@REVISION/path/in/repo.onnx``: one file of a Hugging Face Hub repository at a pinned
  revision (a commit hash, best), through ``huggingface_hub`` into ``<cache>/hf``; an optional
  ``#sha256=HEX`` is checked too.

Every failure is one :class:`~acfd.schemas.artifact.ArtifactError` line that names the URL without
any ``user:password@`` it held.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import socket
import ssl
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acfd.schemas.artifact import ArtifactError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_TIMEOUT_S",
    "HfSpec",
    "default_cache_dir",
    "is_url",
    "parse_hf",
    "public_spec",
    "resolve_model",
]

DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: far above an FP32 Xception (~90 MB) or its TensorRT plan
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_TIMEOUT_S = 60.0  # per connect and per read, not for the whole download
CHUNK = 1 << 20

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")  # a Hub commit hash (immutable); else a branch or tag
_HF = re.compile(r"^hf://(?P<repo>[^@/]+(?:/[^@/]+)?)(?:@(?P<rev>[^/]*))?(?:/(?P<file>.*))?$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/acfd/models``, else ``~/.cache/acfd/models`` (a relative XDG value is ignored,
    as the XDG spec says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "acfd" / "models"


def is_url(spec: str) -> bool:
    """Whether ``spec`` is written as a URL (``scheme://...``) rather than a path."""
    return bool(_SCHEME.match(spec))


def public_spec(spec: str) -> str:
    """``spec`` with any ``user:password@`` removed: safe to print and to store."""
    m = _SCHEME.match(spec)
    if not m:
        return spec
    parts = urllib.parse.urlsplit(spec)
    if "@" not in parts.netloc:
        return spec
    if m.group(1).lower() == "hf":  # hf://org/repo@rev: the '@' is the revision, not credentials
        return spec
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _no_fragment(url: str) -> str:
    return public_spec(url).split("#", 1)[0]


def _pinned_hash(url: str, fragment: str, required: bool) -> str | None:
    """The lower-case hex SHA-256 of ``#sha256=HEX``; a one-line error when missing (if required) or malformed."""
    shown = _no_fragment(url)
    how = f"write it as {shown}#sha256=<64 hex digits> (`sha256sum FILE` prints them)"
    if not fragment:
        if required:
            raise ArtifactError(f"model URL {shown} pins no hash, so a changed file could not be told apart: {how}")
        return None
    key, _, value = fragment.partition("=")
    if key.lower() != "sha256" or not _SHA256.match(value):
        raise ArtifactError(f"model URL {shown}: the part after '#' must be sha256=<64 hex digits>; {how}")
    return value.lower()


def _safe_name(name: str) -> str:
    """A file name for the cache from the URL's last path segment (its suffix picks the backend)."""
    name = _UNSAFE_NAME.sub("_", urllib.parse.unquote(name))
    return "model" if name.strip(".") == "" else name


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model(
    spec: str | os.PathLike[str],
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    timeout: float = DEFAULT_TIMEOUT_S,
    hf_endpoint: str | None = None,
) -> Path:
    """The local file (or run directory) for a model ``spec``: a path, or a pinned http(s)/hf URL.

    URLs are downloaded once into ``cache_dir`` (default :func:`default_cache_dir`) and verified;
    a cached file is used without any request. ``progress`` shows a byte bar on stderr when it is a
    terminal. ``max_bytes`` bounds a download, ``max_redirects`` the redirects followed, ``timeout``
    each connect and read (seconds). ``hf_endpoint`` overrides the Hub address (default: huggingface_hub's,
    which honours ``$HF_ENDPOINT``).
    """
    if not isinstance(spec, str):
        return Path(spec)
    m = _SCHEME.match(spec)
    if not m:
        return Path(spec)
    scheme = m.group(1).lower()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if scheme in ("http", "https"):
        return _resolve_http(spec, cache, progress, max_bytes, max_redirects, timeout)
    if scheme == "hf":
        return _resolve_hf(spec, cache / "hf", progress, timeout, hf_endpoint)
    if os.path.exists(spec):  # an odd but real local path such as "x://y"
        return Path(spec)
    raise ArtifactError(
        f"model {_no_fragment(spec)}: unsupported URL scheme {scheme!r}; use a path, "
        "https://...#sha256=<hex> or hf://org/repo@<commit>/file"
    )


# -- http(s) ----------------------------------------------------------------------------------------


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most ``max_redirections`` redirects (urllib's default is 10)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.max_redirections = limit
        self.max_repeats = min(self.max_repeats, max(1, limit))


def _opener(max_redirects: int) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_Redirects(max_redirects))


def _reason(e: BaseException, timeout: float) -> str:
    """One short line saying why a request failed (no URL: the caller adds it)."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}".rstrip()
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else OSError(str(e.reason))
    if isinstance(e, socket.gaierror):
        return "host not found (offline, or a misspelt host name?)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the server up?)"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s (offline?)"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e}"
    if isinstance(e, ConnectionError):
        return "the connection was closed by the server"
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


def _resolve_http(spec: str, cache: Path, progress: bool, max_bytes: int, max_redirects: int, timeout: float) -> Path:
    parts = urllib.parse.urlsplit(spec)
    want = _pinned_hash(spec, parts.fragment, required=True)
    assert want is not None
    shown = _no_fragment(spec)
    if not parts.hostname:
        raise ArtifactError(f"model URL {shown} names no host")
    folder = cache / want
    target = folder / _safe_name(parts.path.rsplit("/", 1)[-1])
    try:
        if target.is_file():
            # Written only after verification, but re-checked (cheap next to loading the model): a file
            # damaged or replaced in the cache is fetched again instead of being trusted.
            if _sha256_file(target) == want:
                return target
            target.unlink()
    except OSError as e:
        raise ArtifactError(f"cannot read the cached model {target}: {e.strerror or e}") from None

    # Credentials in the URL become a Basic header that is not resent after a redirect (urllib copies
    # ordinary headers to whatever host a redirect names).
    netloc = parts.netloc.rpartition("@")[2]
    req = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc, fragment="")))
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        pw = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{pw}".encode()).decode("ascii")
        req.add_unredirected_header("Authorization", f"Basic {token}")
    req.add_header("Accept-Encoding", "identity")  # the hash is of the file, not of a compressed stream

    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as out:
            got = _download(req, out, shown, progress, max_bytes, max_redirects, timeout)
        if got != want:
            raise ArtifactError(
                f"model {shown}: its SHA-256 is {got}, not the {want} the URL pins; refused, nothing cached"
            )
        os.replace(tmp, target)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        try:
            folder.rmdir()  # only if empty: another file with this hash may already be there
        except OSError:
            pass
        if isinstance(e, OSError):  # the cache folder: not writable, disk full, ...
            raise ArtifactError(f"cannot write the model cache {folder}: {e.strerror or e}") from None
        raise
    return target


def _download(req: urllib.request.Request, out: Any, shown: str, progress: bool, max_bytes: int,
              max_redirects: int, timeout: float) -> str:
    """Streams the response body into ``out``; returns its SHA-256 (hex). One-line errors name ``shown``."""
    import http.client

    def fail(why: str) -> ArtifactError:
        return ArtifactError(f"cannot download model {shown}: {why}")

    try:
        resp = _opener(max_redirects).open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if str(e.msg).startswith(urllib.request.HTTPRedirectHandler.inf_msg):  # urllib's "too many"
            raise fail(f"too many redirects (more than {max_redirects})") from None
        raise fail(_reason(e, timeout)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise fail(_reason(e, timeout)) from None
    with resp:
        length_header = resp.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = None
        if length is not None and length > max_bytes:
            raise fail(f"{length} bytes is more than the limit of {max_bytes}")
        h = hashlib.sha256()
        n = 0
        from tqdm import tqdm

        bar = tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                   desc=shown.rsplit("/", 1)[-1][:40] or "model", disable=None if progress else True, leave=False)
        try:
            while True:
                try:
                    block = resp.read(CHUNK)
                except http.client.IncompleteRead as e:
                    got = n + len(e.partial)
                    raise fail(f"truncated: the server sent {got} of {length} bytes") from None
                except (OSError, http.client.HTTPException) as e:
                    raise fail(f"interrupted after {n} bytes: {_reason(e, timeout)}") from None
                if not block:
                    break
                n += len(block)
                if n > max_bytes:
                    raise fail(f"more than the limit of {max_bytes} bytes")
                h.update(block)
                out.write(block)
                bar.update(len(block))
        finally:
            bar.close()
    if length is not None and n < length:
        raise fail(f"truncated: the server sent {n} of {length} bytes")
    return h.hexdigest()


# -- Hugging Face Hub -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HfSpec:
    """``hf://repo_id@revision/filename[#sha256=HEX]``, parsed."""

    repo_id: str
    revision: str
    filename: str
    sha256: str | None = None


def parse_hf(spec: str) -> HfSpec:
    """Parse ``hf://org/repo@REVISION/path/in/repo.onnx`` (a pinned revision is required)."""
    body, _, fragment = spec.partition("#")
    m = _HF.match(body)
    example = "hf://org/repo@<commit hash>/model.onnx"
    if not m or not m.group("repo"):
        raise ArtifactError(f"model {spec!r} is not an hf:// URL of the form {example}")
    repo, rev, file = m.group("repo"), m.group("rev"), m.group("file")
    if not rev:
        raise ArtifactError(
            f"model {body} pins no revision: write hf://{repo}@<revision>/{file or 'model.onnx'}, "
            "best with a commit hash (a branch such as main can change under you)"
        )
    if not file or file.endswith("/") or any(p in ("", ".", "..") for p in file.split("/")):
        raise ArtifactError(f"model {body} names no file in the repository: write it as {example}")
    return HfSpec(repo, rev, file, _pinned_hash(body, fragment, required=False))


def _resolve_hf(spec: str, cache: Path, progress: bool, timeout: float, endpoint: str | None) -> Path:
    hf = parse_hf(spec)
    shown = spec.partition("#")[0]
    try:
        import huggingface_hub
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:
        raise ArtifactError(f"model {shown}: hf:// URLs need huggingface_hub ({e}); pip install huggingface_hub") from e
    if endpoint is not None:
        endpoint = endpoint.rstrip("/")
    kw: dict[str, Any] = {"revision": hf.revision, "cache_dir": cache, "etag_timeout": timeout, "endpoint": endpoint}
    if not progress:
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **k: Any) -> None:
                k["disable"] = True
                super().__init__(*a, **k)

        kw["tqdm_class"] = _Silent

    def cached() -> Path | None:
        try:
            return Path(huggingface_hub.hf_hub_download(hf.repo_id, hf.filename, local_files_only=True, **kw))
        except LocalEntryNotFoundError:
            return None

    def fail(why: str) -> ArtifactError:
        return ArtifactError(f"cannot download model {shown}: {why}")

    # A commit is immutable: a cached file is used without asking the Hub anything.
    path = cached() if _COMMIT.match(hf.revision) else None
    if path is None:
        try:
            # One HEAD first, without huggingface_hub's retries: offline, hf_hub_download would retry for
            # about 25 s and log each attempt; this answers at once, in one line.
            url = huggingface_hub.hf_hub_url(hf.repo_id, hf.filename, revision=hf.revision, endpoint=endpoint)
            huggingface_hub.get_hf_file_metadata(url, timeout=timeout)
            with _hf_download_bounded(timeout):
                path = Path(huggingface_hub.hf_hub_download(hf.repo_id, hf.filename, **kw))
        except RevisionNotFoundError:
            raise fail(f"revision {hf.revision!r} not found") from None
        except RepositoryNotFoundError:
            raise fail(f"repository {hf.repo_id!r} not found (or private: `hf auth login`)") from None
        except EntryNotFoundError:
            raise fail(f"no file {hf.filename!r} at {hf.revision}") from None
        except HfHubHTTPError as e:
            raise fail(_first_line(e)) from None
        except Exception as e:  # the Hub unreachable: offline, DNS, refused, timeout, $HF_HUB_OFFLINE
            path = cached()  # a branch or tag downloaded before
            if path is None:
                raise fail(f"the Hub cannot be reached ({_first_line(e)}) and the file is not in the cache {cache}") from None
    if hf.sha256 is not None:
        got = _sha256_file(path)
        if got != hf.sha256:
            raise ArtifactError(f"model {shown}: its SHA-256 is {got}, not the {hf.sha256} the URL pins; refused")
    return path


@contextlib.contextmanager
def _hf_download_bounded(timeout: float) -> Iterator[None]:
    """``timeout`` for each read of huggingface_hub's GET, and its retry warnings silenced.

    The GET reads with ``constants.HF_HUB_DOWNLOAD_TIMEOUT`` (10 s, not a parameter) and retries five
    times, logging each try: a Hub that answers the HEAD and then stalls took about a minute and printed
    four extra lines. The failure still ends as our one line.
    """
    from huggingface_hub import constants

    log = logging.getLogger("huggingface_hub.file_download")
    old_timeout, old_level = constants.HF_HUB_DOWNLOAD_TIMEOUT, log.level
    constants.HF_HUB_DOWNLOAD_TIMEOUT = timeout
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = old_timeout
        log.setLevel(old_level)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else e.__class__.__name__
