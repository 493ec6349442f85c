"""A real HTTP server on 127.0.0.1 for tests of URL inputs, and the media it serves.

:class:`Site` is a ``ThreadingHTTPServer`` in a daemon thread, started and stopped by the test (a
context manager); each path is a :class:`Route`: a body served with Range support, validators (ETag,
Last-Modified, Content-Length) or none, Basic auth, redirects, HEAD refused, a stall before answering,
or a connection cut in the middle of the body. Every request is recorded (method, path, headers).
"""

from __future__ import annotations

import base64
import http.server
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import av

from tests.media import moving_face_frames


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None  # an HTTP date
    length: bool = True  # send Content-Length on 200 and HEAD (False: the body ends at the close)
    location: str | None = None  # a redirect (status 302 unless set otherwise)
    auth: tuple[str, str] | None = None  # Basic credentials required (401 otherwise)
    head: bool = True  # False: HEAD is refused with 405
    stall_s: float = 0.0  # accept, read the request, then say nothing for this long (with cut_at: after the cut)
    cut_at: int | None = None  # GET: send this many body bytes (headers announce them all), then close


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        site = self.server.site
        path = self.path.split("?", 1)[0]
        site.requests.append(Request(self.command, path, dict(self.headers)))
        route = site.routes.get(path)
        self.close_connection = True
        if route is None:
            return self._empty(404, "Not Found")
        if route.stall_s and route.cut_at is None:
            site.stop.wait(route.stall_s)
            return
        if route.auth is not None:
            want = "Basic " + base64.b64encode(f"{route.auth[0]}:{route.auth[1]}".encode()).decode()
            if self.headers.get("Authorization") != want:
                return self._empty(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="acfd"'})
        if route.location is not None:
            return self._empty(route.status if 300 <= route.status < 400 else 302, "Found", {"Location": route.location})
        if route.status != 200:
            return self._empty(route.status, http.server.BaseHTTPRequestHandler.responses.get(route.status, ("",))[0])
        if not body and not route.head:
            return self._empty(405, "Method Not Allowed")
        data = route.body
        start, end = 0, len(data) - 1
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        ranged = m is not None and len(data) > 0
        if ranged:
            assert m is not None
            start = int(m.group(1) or 0)
            end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            if start >= len(data):
                return self._empty(416, "Range Not Satisfiable", {"Content-Range": f"bytes */{len(data)}"})
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Accept-Ranges", "bytes")
        if ranged or route.length:
            self.send_header("Content-Length", str(end - start + 1))
        if route.etag is not None:
            self.send_header("ETag", route.etag)
        if route.last_modified is not None:
            self.send_header("Last-Modified", route.last_modified)
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            part = data[start : end + 1]
            if route.cut_at is not None:
                part = part[: max(0, route.cut_at - start)]
            try:
                self.wfile.write(part)
                if route.cut_at is not None and route.stall_s:
                    site.stop.wait(route.stall_s)  # the connection stays open, silent
            except OSError:
                pass  # the client went away

    def _empty(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status, reason)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    site: Site


@dataclass
class Site:
    """An HTTP server on 127.0.0.1 (a free port) serving ``routes``; ``with Site() as s: s.url('/a.mp4')``."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.site = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str, auth: str = "") -> str:
        return f"http://{auth + '@' if auth else ''}127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()  # stalled handlers return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hls_vod(folder: Path, n: int = 30, fps: int = 10, size: tuple[int, int] = (240, 320), name: str = "vod") -> Path:
    """An HLS VOD made by PyAV's hls muxer: ``name.m3u8`` and 1 s segments ``name0.ts``...; the astronaut
    moving as in :func:`tests.media.moving_face_frames`."""
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / f"{name}.m3u8"
    opts = {"hls_time": "1", "hls_playlist_type": "vod"}
    with av.open(str(playlist), "w", format="hls", options=opts) as out:
        s = out.add_stream("libx264", rate=fps, options={"g": str(fps), "threads": "1"})
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        for f in moving_face_frames(n, size):
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    return playlist


def serve_folder(site: Site, folder: Path, prefix: str = "/", **route: object) -> None:
    """Every file of ``folder`` as a route under ``prefix``, with HLS and video Content-Types."""
    types = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".mp4": "video/mp4"}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            site.routes[prefix + p.name] = Route(p.read_bytes(), types.get(p.suffix, "application/octet-stream"),
                                                 **route)  # type: ignore[arg-type]


def playlist(segments: list[str], ended: bool = True, duration: float = 1.0) -> bytes:
    """A media playlist over ``segments`` (URIs as written)."""
    head = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
    if ended:
        head += "#EXT-X-PLAYLIST-TYPE:VOD\n"
    body = "".join(f"#EXTINF:{duration:.6f},\n{s}\n" for s in segments)
    return (head + body + ("#EXT-X-ENDLIST\n" if ended else "")).encode()
