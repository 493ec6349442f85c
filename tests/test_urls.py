"""URLs as scan inputs: real HTTP servers on 127.0.0.1 (tests/url_helpers.py), real PyAV/FFmpeg, the tiny
test models; every failure is one error row with a one-line reason and the scan goes on; passwords are
used and never stored or printed; resume by the server's validators."""

from __future__ import annotations

import ctypes
import json
import re
import sqlite3
from pathlib import Path

import av
import pytest
from acfd.scanner import decode, urls
from acfd.scanner.cli import main
from acfd.scanner.decode import DecodeError, Sampling
from acfd.scanner.discover import Candidate
from acfd.schemas.errors import AcfdError
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.url_helpers import Route, Site, free_port, hls_vod, playlist, serve_folder

REFUSED = ": acfd-scan reads http, https, rtsp, rtmp, srt, udp"
PASSWORD = "s3cr3t-Pw"


def faststart_video(path: Path, n: int, fps: int = 10) -> Path:
    """A face clip whose index (moov) comes first, as streaming servers serve MP4."""
    from tests.media import moving_face_frames

    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        s = out.add_stream("libx264", rate=fps, options={"g": str(fps), "threads": "1"})
        s.height, s.width = 240, 320
        s.pix_fmt = "yuv420p"
        for f in moving_face_frames(n, (240, 320)):
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "clip": H.face_video(d / "a.mp4", n=10, fps=10),  # 1 s, moov at the end (PyAV's default)
        "long": faststart_video(d / "long.mp4", n=40),  # 4 s, moov first
        "hls": hls_vod(d / "hls").parent,  # vod.m3u8 + vod0.ts vod1.ts vod2.ts (1 s each)
    }


@pytest.fixture(scope="module")
def site(media):
    with Site() as s:
        s.routes["/a.mp4"] = Route(media["clip"].read_bytes(), "video/mp4", etag='"a-1"',
                                   last_modified="Tue, 01 Dec 2026 10:00:00 GMT")
        serve_folder(s, media["hls"], "/hls/")
        yield s


def scan(*args: object):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(main, [str(a) for a in args])


def videos(db: Path, scan_id: int | None = None) -> dict[str, dict]:
    """{path: row} of the store's videos (with the whole-video verdict), the newest row per path."""
    q = ("SELECT v.*, vd.label AS label, vd.score AS score FROM videos v LEFT JOIN verdicts vd "
         "ON vd.video_id = v.id AND vd.identity IS NULL" + ("" if scan_id is None else f" WHERE v.scan_id = {scan_id}")
         + " ORDER BY v.id")
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return {r["path"]: dict(r) for r in c.execute(q)}


def detections(db: Path, path: str) -> list[tuple]:
    return H.rows(db, "SELECT d.frame_index, d.time_s, d.x0, d.y0, d.x1, d.y1, d.det_score, d.score FROM detections d "
                      "JOIN videos v ON v.id = d.video_id WHERE v.path = ? ORDER BY d.frame_index, d.x0", path)


# -- the urls module -------------------------------------------------------------------------------------

def test_schemes_public_url_and_redaction():
    assert urls.is_url("http://h/x") and urls.is_url("ftp://h") and urls.is_url("rtsp://cam:554/s")
    assert not any(urls.is_url(p) for p in ("/a/b.mp4", "a.mp4", "C:\\x.mp4", "./http://x", "http:/x"))
    assert urls.public_url("https://al:p%40ss@h.example:8443/v.m3u8?t=1") == "https://h.example:8443/v.m3u8?t=1"
    assert urls.public_url("rtsp://admin:pw@10.0.0.5:554/live") == "rtsp://10.0.0.5:554/live"
    assert urls.public_url("http://h/x@y") == "http://h/x@y"  # an '@' in the path is not a password
    u = f"http://bob:{PASSWORD}@h/x.mp4"
    assert urls.redact(f"cannot open {u}: 401 for bob:{PASSWORD}; {PASSWORD}", u) == "cannot open http://h/x.mp4: 401 for bob:***; ***"
    enc = "http://bob:a%2Fb@h/x"
    assert urls.redact("sent a/b and a%2Fb", enc) == "sent *** and ***"
    for bad, scheme in (("ftp://u:pw@x/y", "ftp"), ("file:///etc/passwd", "file"), ("gopher://x", "gopher")):
        with pytest.raises(urls.UrlError) as e:
            urls.check_url(bad)
        assert isinstance(e.value, AcfdError)
        assert str(e.value) == f"unsupported scheme {scheme!r} in {urls.public_url(bad)}{REFUSED}"
        assert "pw" not in str(e.value)
    assert [urls.check_url(f"{s}://h/x") for s in urls.SCHEMES] == list(urls.SCHEMES)
    with pytest.raises(urls.UrlError, match="host and port cannot be read"):
        urls.check_url("http://u:pa/ss@h/x")  # an unencoded '/' in a password: refused, not quoted
    assert "pa/ss" not in _error(lambda: urls.check_url("http://u:pa/ss@h/x"))
    assert _error(lambda: urls.check_url("ftp://u:pa/ss@h/x")) == f"unsupported scheme 'ftp' in a ftp URL whose host cannot be read{REFUSED}"


def _error(fn) -> str:  # noqa: ANN001
    try:
        fn()
    except Exception as e:
        return str(e)
    return ""


def test_url_item_keeps_its_password_out_of_sight():
    c = Candidate(path="http://h/x.mp4", url=f"http://u:{PASSWORD}@h/x.mp4", etag='"1"')
    assert c.target == f"http://u:{PASSWORD}@h/x.mp4" and c.key == b"http://h/x.mp4" and c.display == "http://h/x.mp4"
    assert PASSWORD not in repr(c) and PASSWORD not in str(c)
    assert c.content_hash() is None  # a URL is not read twice to hash it


@pytest.mark.parametrize(
    ("now", "stored", "unchanged"),
    [
        (("e1", None, None), (None, None, "e1"), True),  # (size, mtime, etag) now -> stored
        (("e1", None, None), (None, None, "e2"), False),  # the ETag changed
        ((None, 5, 7), (5, 7, None), True),  # Content-Length + Last-Modified, both equal
        ((None, 5, 7), (5, 8, None), False),  # Last-Modified changed
        ((None, 5, None), (5, 7, None), True),  # only what the server gives now is compared
        (("e1", 5, None), (5, None, None), False),  # an ETag now, none stored: changed
        ((None, None, None), (None, None, None), False),  # no validators: always scanned again
    ],
)
def test_url_resume_rule(now, stored, unchanged):
    etag, size, mtime = now
    c = Candidate(path="http://h/x", url="http://h/x", size=size, mtime_ns=mtime, etag=etag)
    assert c.unchanged_since(*stored) is unchanged
    f = Candidate(path="/x.mp4", size=5, mtime_ns=7)
    assert f.unchanged_since(5, 7, "anything") and not f.unchanged_since(5, 8, None)  # files ignore etag


def test_ffmpeg_options_per_scheme():
    o = urls.ffmpeg_options("https://u:p@h/v.m3u8", 2.5)
    assert o == {"protocol_whitelist": "http,https,tcp,tls,crypto", "rw_timeout": "2500000", "max_redirects": "5"}
    assert urls.ffmpeg_options("rtsp://h/s", 1) == {"protocol_whitelist": "tcp,udp,rtp,srtp,tls",
                                                    "rw_timeout": "1000000", "timeout": "1000000",
                                                    "rtsp_flags": "prefer_tcp"}
    assert urls.ffmpeg_options("rtmp://h/app/key", 1)["protocol_whitelist"] == "rtmp,rtmps,tcp,tls"
    assert "file" not in ",".join(urls.PROTOCOLS.values()) and "data" not in ",".join(urls.PROTOCOLS.values())
    with pytest.raises(urls.UrlError):
        urls.ffmpeg_options("file:///etc/passwd", 1)


def _ffmpeg_option_finder():  # noqa: ANN202
    """has(kind, option): whether the FFmpeg that PyAV loaded knows ``option`` where ``ffmpeg_options``
    means it (av_opt_find on the classes: AVFormatContext, URLContext, the http protocol, the rtsp demuxer)."""
    maps = Path("/proc/self/maps").read_text()

    def lib(name: str) -> ctypes.CDLL:
        m = re.search(r"(/\S*" + name + r"[^/\s]*\.so[^/\s]*)", maps)
        if m is None:
            pytest.skip(f"{name} not found among the loaded libraries")
        return ctypes.CDLL(m.group(1))

    fmt, util = lib("libavformat"), lib("libavutil")
    vp = ctypes.c_void_p
    util.av_opt_find.restype = vp
    util.av_opt_find.argtypes = [vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    util.av_opt_child_class_iterate.restype = vp
    util.av_opt_child_class_iterate.argtypes = [vp, ctypes.POINTER(vp)]
    fmt.avformat_get_class.restype = vp
    fmt.avio_protocol_get_class.restype = vp
    fmt.avio_protocol_get_class.argtypes = [ctypes.c_char_p]
    fmt.av_find_input_format.restype = vp
    fmt.av_find_input_format.argtypes = [ctypes.c_char_p]
    fmt.avio_open2.argtypes = [ctypes.POINTER(vp), ctypes.c_char_p, ctypes.c_int, vp, vp]
    fmt.avio_closep.argtypes = [ctypes.POINTER(vp)]

    class InputFormat(ctypes.Structure):  # the public head of AVInputFormat
        _fields_ = [("name", ctypes.c_char_p), ("long_name", ctypes.c_char_p), ("flags", ctypes.c_int),
                    ("extensions", ctypes.c_char_p), ("codec_tag", vp), ("priv_class", vp)]

    # URLContext's class is the child class of an opened AVIOContext's (no other public way to it).
    pb = vp(None)
    assert fmt.avio_open2(ctypes.byref(pb), b"data:,x", 1, None, None) == 0
    url_ctx = util.av_opt_child_class_iterate(vp.from_address(pb.value).value, ctypes.byref(vp(None)))
    fmt.avio_closep(ctypes.byref(pb))
    classes = {
        "format": fmt.avformat_get_class(),
        "url": url_ctx,
        "http": fmt.avio_protocol_get_class(b"http"),
        "rtsp": InputFormat.from_address(fmt.av_find_input_format(b"rtsp")).priv_class,
    }
    names = {k: ctypes.cast(vp.from_address(v).value, ctypes.c_char_p).value for k, v in classes.items()}
    assert names == {"format": b"AVFormatContext", "url": b"URLContext", "http": b"http", "rtsp": b"RTSP demuxer"}

    def has(kind: str, option: str) -> bool:
        obj = vp(classes[kind])
        return bool(util.av_opt_find(ctypes.byref(obj), option.encode(), None, 0, 2))  # AV_OPT_SEARCH_FAKE_OBJ

    return has


def test_every_ffmpeg_option_exists_in_pyavs_ffmpeg():
    # PyAV hands unknown options to FFmpeg, which ignores them without a word: check each one is known
    has = _ffmpeg_option_finder()
    assert has("format", "protocol_whitelist") and has("url", "protocol_whitelist")
    assert has("url", "rw_timeout") and has("http", "max_redirects") and has("rtsp", "timeout")
    assert not has("format", "rw_timeout_nonsense") and not has("http", "rw_timeout")  # the check can fail
    where = {"protocol_whitelist": "format", "rw_timeout": "url", "max_redirects": "http"}
    for scheme in urls.SCHEMES:
        for opt in urls.ffmpeg_options(f"{scheme}://h/x", 1):
            kind = "rtsp" if (scheme, opt) in (("rtsp", "timeout"), ("rtsp", "rtsp_flags")) else where[opt]
            assert has(kind, opt), (scheme, opt)


# -- FFmpeg's side: the whitelist, redirects, playlists that point elsewhere ------------------------------

def test_whitelist_really_limits_ffmpeg(site, media, tmp_path):
    url = site.url("/a.mp4")
    with pytest.raises(av.error.FFmpegError):  # no http in the list: refused, so the option is applied
        av.open(url, options={"protocol_whitelist": "https,tls,tcp"}, timeout=5)
    assert decode.probe(url, 5).duration_s == pytest.approx(1.0)
    # playlists the HTTP probe would refuse, opened by the decoder directly: FFmpeg refuses them too
    ts = media["hls"] / "vod0.ts"
    site.routes["/x/passwd.m3u8"] = Route(playlist(["file:///etc/passwd"]), "application/vnd.apple.mpegurl")
    site.routes["/x/local.m3u8"] = Route(playlist([f"file://{ts}"]), "application/vnd.apple.mpegurl")
    site.routes["/x/remote.m3u8"] = Route(playlist([site.url("/hls/vod0.ts")]), "application/vnd.apple.mpegurl")
    for name in ("passwd", "local"):
        with pytest.raises(DecodeError, match="not a readable video container"):
            decode.probe(site.url(f"/x/{name}.m3u8"), 5)
    assert decode.probe(site.url("/x/remote.m3u8"), 5).container == "hls"  # the same segment over http: read
    # FFmpeg's own redirect limit (max_redirects = 5), for what the probe does not see (segments)
    for i in range(6):
        site.routes[f"/r/{i}"] = Route(location="/a.mp4" if i == 0 else f"/r/{i - 1}")
    assert decode.probe(site.url("/r/4"), 5).container.startswith("mov")  # 5 redirects: followed
    with pytest.raises(DecodeError, match="Input/output error"):
        decode.probe(site.url("/r/5"), 5)  # 6: refused
    with av.open(site.url("/r/5"), timeout=5) as c:  # FFmpeg's default (8) would follow them
        assert c.streams.video


def test_decoder_refusals_for_urls(site, media):
    url = site.url("/a.mp4")
    with pytest.raises(DecodeError, match="^decord reads local files only"):
        decode.open_frames(url, Sampling(fps=1), "decord")
    info, frames = decode.open_frames(url, Sampling(fps=None, frames=3), "auto", timeout_s=5)
    _, local = decode.open_frames(str(media["clip"]), Sampling(fps=None, frames=3), "pyav")
    times = [f.time_s for f in frames]
    assert info.decoder == "pyav" and len(times) == 3 and times == [f.time_s for f in local]
    # a live playlist (no end) has no duration: --frames cannot be spread over it
    site.routes["/live/live.m3u8"] = Route(playlist([site.url(f"/hls/vod{i}.ts") for i in range(3)], ended=False),
                                           "application/vnd.apple.mpegurl")
    with pytest.raises(DecodeError) as e:
        decode.open_frames(site.url("/live/live.m3u8"), Sampling(fps=None, frames=2), timeout_s=5)
    assert str(e.value) == ("--frames needs the stream's duration and this one has none (a live stream?): use --fps")


def test_a_stream_that_stalls_midway_times_out(site, media):
    data = media["long"].read_bytes()
    site.routes["/stall-mid.mp4"] = Route(data, "video/mp4", cut_at=len(data) // 2, stall_s=30)
    info, frames = decode.open_frames(site.url("/stall-mid.mp4"), Sampling(fps=5), timeout_s=1)
    assert info.duration_s == pytest.approx(4.0)
    got = []
    with pytest.raises(DecodeError) as e:
        got.extend(frames)  # PyAV's read timeout, not the end of the video
    assert str(e.value) == "timed out after 1 s without data" and 0 < len(got) < 20


# -- the http(s) probe ------------------------------------------------------------------------------------

def test_probe_http_facts_and_refusals(site, media):
    size = len(media["clip"].read_bytes())
    f = urls.probe_http(site.url("/a.mp4"), 5)
    assert (f.url, f.content_type, f.size, f.etag, f.redirects, f.hls) == (site.url("/a.mp4"), "video/mp4", size, '"a-1"', 0, False)
    assert f.mtime_ns == 1796119200 * 10**9  # Tue, 01 Dec 2026 10:00:00 GMT
    site.routes["/nohead.mp4"] = Route(media["clip"].read_bytes(), "video/mp4", head=False)
    n = len(site.requests)
    assert urls.probe_http(site.url("/nohead.mp4"), 5).size == size  # from Content-Range of a 1-byte GET
    assert [(r.method, r.headers.get("Range")) for r in site.requests[n:]] == [("HEAD", None), ("GET", "bytes=0-0")]
    for i in range(7):
        site.routes[f"/p/{i}"] = Route(location="/a.mp4" if i == 0 else f"/p/{i - 1}")
    g = urls.probe_http(site.url("/p/4"), 5)
    assert (g.url, g.redirects, g.etag) == (site.url("/a.mp4"), 5, '"a-1"')
    site.routes["/ftp"] = Route(location="ftp://127.0.0.1/a.mp4", status=301)
    cases = {
        "/p/5": "too many redirects (more than 5)",
        "/ftp": "redirect to an unsupported scheme 'ftp' (ftp://127.0.0.1/a.mp4)",
        "/nothing.mp4": "HTTP 404 Not Found",
    }
    for path, line in cases.items():
        with pytest.raises(urls.UrlError) as e:
            urls.probe_http(site.url(path), 5)
        assert str(e.value) == line
    with pytest.raises(urls.UrlError) as e:
        urls.probe_http(site.url("/a.mp4"), 5, urls.UrlPolicy(max_bytes=1000))
    assert str(e.value) == f"too large: {size} bytes, more than the limit of 1000 bytes (9.31323e-07 GiB)"
    assert urls.POLICY.max_bytes == 64 << 30
    h = urls.probe_http(site.url("/hls/vod.m3u8"), 5)
    assert h.hls and h.content_type == "application/vnd.apple.mpegurl"


def test_probe_refuses_playlist_loops(site):
    hls = "application/vnd.apple.mpegurl"
    site.routes["/loop/a.m3u8"] = Route(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nb.m3u8\n", hls)
    site.routes["/loop/b.m3u8"] = Route(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n", hls)
    with pytest.raises(urls.UrlError) as e:
        urls.probe_http(site.url("/loop/a.m3u8"), 5)
    assert str(e.value) == f"the HLS variant playlist {site.url('/loop/b.m3u8')} is a master playlist again (a loop?)"
    site.routes["/loop/key.m3u8"] = Route(b'#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="file:///etc/key"\n#EXTINF:1,\ns.ts\n'
                                          b"#EXT-X-ENDLIST\n", hls)
    with pytest.raises(urls.UrlError, match=r"^the HLS playlist points to an unsupported scheme 'file' \(file:///etc/key\)$"):
        urls.probe_http(site.url("/loop/key.m3u8"), 5)


# -- scans -------------------------------------------------------------------------------------------------

def test_scan_urls_end_to_end(site, models, media, tmp_path):
    db, out = tmp_path / "u.sqlite", tmp_path / "u.jsonl"
    a, vod = site.url("/a.mp4"), site.url("/hls/vod.m3u8")
    r = scan(a, vod, "--model", models["fake"], "--db", db, "--workers", 0, "-q", "--fps", 2, "--jsonl", out)
    assert r.exit_code == 1, r.output  # both flagged by the "fake" model, no errors
    got = videos(db)
    assert sorted(got) == [a, vod]
    ra, rv = got[a], got[vod]
    assert (ra["status"], ra["label"], ra["decoder"], ra["error"], ra["content_hash"]) == ("ok", "fake", "pyav", None, None)
    assert (ra["size"], ra["etag"], ra["mtime_ns"]) == (len(media["clip"].read_bytes()), '"a-1"', 1796119200 * 10**9)
    assert (ra["n_frames"], ra["n_faces"], ra["duration_s"], ra["width"], ra["height"]) == (2, 2, 1.0, 320, 240)
    assert (rv["status"], rv["label"], rv["container"], rv["n_frames"], rv["n_faces"]) == ("ok", "fake", "hls", 6, 6)
    assert rv["duration_s"] == pytest.approx(3.0) and rv["size"] == len((media["hls"] / "vod.m3u8").read_bytes())
    assert bytes(ra["path_key"]) == a.encode()
    for row in (ra, rv):
        assert row["score"] == pytest.approx(15.03, abs=0.02)  # the fake model: |mean(crop) + 15|
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["path"], x["status"], x["label"], x["n_frames"]) for x in lines] == [(a, "ok", "fake", 2), (vod, "ok", "fake", 6)]
    args = json.loads(H.rows(db, "SELECT args FROM scans")[0][0])
    assert args["paths"] == [a, vod]


def test_same_clip_as_path_and_as_url(site, models, media, tmp_path):
    db = tmp_path / "same.sqlite"
    clip, url = str(media["clip"]), site.url("/a.mp4")
    r = scan(clip, url, "--model", models["fake"], "--db", db, "--workers", 0, "-q", "--fps", 5, "--decoder", "pyav")
    assert r.exit_code == 1, r.output
    by_path, by_url = detections(db, clip), detections(db, url)
    assert len(by_path) == len(by_url) == 5
    for p, u in zip(by_path, by_url, strict=True):
        assert p[:2] == u[:2]  # frame index and time
        assert max(abs(x - y) for x, y in zip(p[2:], u[2:], strict=True)) < 1e-5
    # decord on the local file against PyAV over http: the same frames, decoded by another library
    db2 = tmp_path / "decord.sqlite"
    r = scan(clip, "--model", models["fake"], "--db", db2, "--workers", 0, "-q", "--fps", 5, "--decoder", "decord")
    assert r.exit_code == 1, r.output
    by_decord = detections(db2, clip)
    assert [d[0] for d in by_decord] == [u[0] for u in by_url]  # the same frames (decord's times are float32)
    assert max(abs(d[1] - u[1]) for d, u in zip(by_decord, by_url, strict=True)) < 1e-6
    diff = max(abs(x - y) for d, u in zip(by_decord, by_url, strict=True) for x, y in zip(d[2:], u[2:], strict=True))
    score_diff = max(abs(d[-1] - u[-1]) for d, u in zip(by_decord, by_url, strict=True))
    print(f"decord (path) vs PyAV (URL): max difference {diff:.3g} (boxes, detector scores, scores), scores {score_diff:.3g}")
    assert score_diff < 0.05


def test_bad_urls_each_get_one_error_row_and_the_scan_goes_on(site, models, media, tmp_path):
    hls = "application/vnd.apple.mpegurl"
    long = media["long"].read_bytes()
    site.routes.update({
        "/bad/stall.mp4": Route(stall_s=30),  # accepts, reads the request, says nothing
        "/bad/page.mp4": Route(b"<html><body>Please log in</body></html>", "text/html; charset=utf-8"),
        "/bad/seg404.m3u8": Route(playlist(["gone0.ts", "gone1.ts"]), hls),
        "/bad/cut.mp4": Route(long, "video/mp4", cut_at=len(long) // 2),  # the connection drops mid-body
        "/bad/truncated.mp4": Route(media["clip"].read_bytes()[:6000], "video/mp4"),  # a cut file (index lost)
        # ends in the middle of its last segment (a cut file: the server says so itself)
        "/bad/short.m3u8": Route(playlist(["/hls/vod0.ts", "/hls/vod1.ts", "/bad/vod2-cut.ts"]), hls),
        "/bad/vod2-cut.ts": Route((media["hls"] / "vod2.ts").read_bytes()[:600], "video/mp2t"),
        "/bad/self.m3u8": Route(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nself.m3u8\n", hls),
        "/bad/passwd.m3u8": Route(playlist(["file:///etc/passwd"]), hls),
    })
    refused = f"http://127.0.0.1:{free_port()}/a.mp4"
    bad = {
        site.url("/bad/missing.mp4"): "HTTP 404 Not Found",
        refused: "connection refused",
        site.url("/bad/stall.mp4"): "timed out after 3 s",
        site.url("/bad/page.mp4"): "not a video: the server sent an HTML page (text/html)",
        site.url("/bad/seg404.m3u8"): f"HLS segment {site.url('/bad/gone0.ts')}: HTTP 404 Not Found",
        site.url("/bad/cut.mp4"): "the stream ended early: ",
        site.url("/bad/truncated.mp4"): "not a readable video container (",
        site.url("/bad/short.m3u8"): "the stream ended early: ",
        site.url("/bad/self.m3u8"): f"the HLS playlist points to itself ({site.url('/bad/self.m3u8')})",
        site.url("/bad/passwd.m3u8"): "the HLS playlist points to an unsupported scheme 'file' (file:///etc/passwd)",
    }
    db = tmp_path / "bad.sqlite"
    good = site.url("/a.mp4")
    r = scan(*bad, good, "--model", models["fake"], "--db", db, "--workers", 0, "-q", "--fps", 2, "--timeout", 3)
    assert r.exit_code == 3, r.output  # flagged (the good one) and errors
    got = videos(db)
    assert sorted(got) == sorted([*bad, good])
    for url, line in bad.items():
        row = got[url]
        assert row["status"] == "error" and "\n" not in row["error"], (url, row["error"])
        assert row["error"] == line if not line.endswith((": ", "(")) else row["error"].startswith(line), (url, row["error"])
        assert f"  ERROR {url}: {row['error']}" in r.stderr
    assert got[good]["status"] == "ok" and got[good]["label"] == "fake"
    print({u.rsplit("/", 1)[1]: got[u]["error"] for u in bad})
    # the cut stream says how far it got: about half of 4 s
    m = re.search(r"ended early: ([\d.]+) s of its ([\d.]+) s", got[site.url("/bad/cut.mp4")]["error"])
    assert m and 0.5 < float(m.group(1)) < 3.5 and float(m.group(2)) == pytest.approx(4.0)
    # nothing was requested outside the server: no file:, and the playlist's self-loop stopped at the probe
    assert sum(q.path == "/bad/self.m3u8" for q in site.requests) == 2  # HEAD, then GET of the playlist


def test_credentials_are_used_and_never_stored_or_printed(site, models, media, tmp_path):
    clip = media["clip"].read_bytes()
    site.routes["/private/a.mp4"] = Route(clip, "video/mp4", auth=("alice", PASSWORD), etag='"p"')
    site.routes["/private/b.mp4"] = Route(clip, "video/mp4", auth=("alice", PASSWORD))
    ok = site.url("/private/a.mp4", f"alice:{PASSWORD}")
    again = site.url("/private/a.mp4", "bob:other-pw")  # the same URL once public: left out, not probed
    wrong = site.url("/private/b.mp4", "alice:not-it")
    gone = site.url("/private/gone.mp4", f"alice:{PASSWORD}")
    db, out = tmp_path / "c.sqlite", tmp_path / "c.jsonl"
    n = len(site.requests)
    # a worker process this time: the URL as given (password included) goes down its pipe, and nowhere else
    r = scan(ok, again, wrong, gone, "--model", models["fake"], "--db", db, "--workers", 1, "-q", "--fps", 2,
             "--jsonl", out)
    assert r.exit_code == 3, r.output
    public = site.url("/private/a.mp4")
    rows = H.rows(db, "SELECT path, status, error FROM videos ORDER BY id")
    assert sorted(rows) == [(public, "ok", None), (site.url("/private/b.mp4"), "error", "HTTP 401 Unauthorized"),
                            (site.url("/private/gone.mp4"), "error", "HTTP 404 Not Found")]  # rows in finishing order
    # the server checked the password: on the probe's HEAD and on FFmpeg's GETs
    token = "Basic YWxpY2U6czNjcjN0LVB3"  # base64("alice:s3cr3t-Pw")
    seen = [(q.method, q.headers.get("Authorization") == token) for q in site.requests[n:] if q.path == "/private/a.mp4"]
    assert ("HEAD", True) in seen and ("GET", True) in seen
    assert not any("bob" in q.headers.get("Authorization", "") or q.headers.get("Authorization") == "Basic Ym9iOm90aGVyLXB3"
                   for q in site.requests[n:])  # the second form of the URL was left out, never sent
    # nowhere: the store (every table, WAL included), the JSONL, stdout, stderr
    with sqlite3.connect(db) as c:
        dump = "\n".join(c.iterdump())
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite*"))
    for text in (dump, out.read_text(), r.stdout, r.stderr):
        assert not any(s in text for s in (PASSWORD, "alice:", "not-it", "other-pw", "bob:"))
    assert PASSWORD.encode() not in stored and b"other-pw" not in stored
    assert public in r.stderr and public in out.read_text()


def test_refused_scheme_on_the_command_line_exits_4_before_scanning(models, tmp_path):
    db = tmp_path / "f.sqlite"
    for bad, scheme in (("ftp://x", "ftp"), (f"file://u:{PASSWORD}@/etc/passwd", "file")):
        r = scan(bad, "--model", models["fake"], "--db", db, "-q")
        assert r.exit_code == 4
        assert r.stderr.strip() == f"Error: unsupported scheme {scheme!r} in {urls.public_url(bad)}{REFUSED}"
        assert PASSWORD not in r.output
    r = scan("http://127.0.0.1:9/a.mp4", "--decoder", "decord", "--model", models["fake"], "--db", db, "-q")
    assert r.exit_code == 4 and r.stderr.strip() == (
        "Error: --decoder decord reads local files only; URLs are decoded by PyAV: use --decoder auto or pyav")
    assert not db.exists()  # refused before the store was opened


def test_resume_by_the_servers_validators(site, models, media, tmp_path):
    body = media["clip"].read_bytes()
    site.routes["/r/etag.mp4"] = Route(body, "video/mp4", etag='"one"')
    site.routes["/r/plain.mp4"] = Route(body, "video/mp4", length=False)  # no ETag, Last-Modified, length
    e, p = site.url("/r/etag.mp4"), site.url("/r/plain.mp4")
    db = tmp_path / "r.sqlite"

    def run() -> int:
        r = scan(e, p, "--model", models["fake"], "--db", db, "--workers", 0, "-q", "--fps", 1)
        assert r.exit_code == 1, r.output  # flagged, also when skipped (the stored verdict counts)
        return H.rows(db, "SELECT MAX(id) FROM scans")[0][0]

    s1 = run()
    assert {k: (v["status"], v["etag"], v["size"]) for k, v in videos(db, s1).items()} == {
        e: ("ok", '"one"', len(body)), p: ("ok", None, None)}
    s2 = run()
    assert list(videos(db, s2)) == [p]  # the ETag matched: skipped; no validators: scanned again
    assert H.rows(db, f"SELECT n_found, n_skipped, n_ok FROM scans WHERE id = {s2}") == [(2, 1, 1)]
    site.routes["/r/etag.mp4"].etag = '"two"'  # the resource changed
    s3 = run()
    assert {k: v["etag"] for k, v in videos(db, s3).items()} == {e: '"two"', p: None}
