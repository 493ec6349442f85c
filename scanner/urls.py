"""URLs as scan inputs: which schemes are read, how an http(s) URL is checked before decoding, and the
FFmpeg options that keep a URL's decoder to the protocols its scheme needs.

- **Schemes** (:data:`SCHEMES`): ``http``, ``https`` (progressive MP4/MKV/WebM, HLS ``.m3u8``), ``rtsp``,
  ``rtmp``, ``srt``, ``udp``, all decoded by FFmpeg through PyAV. :func:`is_url` says whether an input is
  written as a URL (``scheme://``); :func:`check_url` refuses any other scheme (``ftp://``, ``file://``...)
  in one line. ``srt`` is allowed but needs an FFmpeg built with libsrt (PyAV's wheels are not): such a
  URL then fails at decoding with one line.
- **Credentials** (``user:password@host``) are used for the requests (HTTP Basic; FFmpeg does the same
  for the decoder) and never stored or printed: :func:`public_url` is the URL without them, and
  :func:`redact` removes them from any text (FFmpeg messages may quote the URL).
- **Probe** (:func:`probe_http`, http and https only): HEAD (GET of one byte when HEAD is refused),
  redirects followed here, at most :attr:`UrlPolicy.max_redirects`, to http(s) only; it gives the final
  URL, Content-Type, Content-Length, ETag and Last-Modified, and refuses HTML pages and files over
  :attr:`UrlPolicy.max_bytes`. An HLS playlist is read too: every entry must be http(s) and not the
  playlist itself, a variant must be a media playlist, and the first segment must answer.
- **Items** (:func:`url_item`): a URL as a scan item (:class:`~acfd.scanner.discover.Candidate`): its
  public URL is its identity, the server's validators (ETag, Last-Modified, Content-Length) its resume
  key, and a failed probe its error row.
- **Decoder options** (:func:`ffmpeg_options`): ``protocol_whitelist`` per scheme (an HLS playlist can
  never make FFmpeg open ``file:``, ``data:``, ``udp:``...), I/O timeouts, FFmpeg's own redirect limit.
  Each option was checked to exist in the FFmpeg that PyAV bundles (``tests/test_urls.py``): PyAV
  passes unknown options on without a word.

Every failure is a :class:`UrlError`: one line, without any password.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import re
import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field

from acfd.schemas.errors import AcfdError

from .discover import Candidate

__all__ = [
    "HLS_TYPES",
    "HTTP_SCHEMES",
    "POLICY",
    "PROTOCOLS",
    "SCHEMES",
    "HttpFacts",
    "UrlError",
    "UrlPolicy",
    "check_url",
    "ffmpeg_options",
    "is_url",
    "probe_http",
    "public_url",
    "redact",
    "scheme_of",
    "url_item",
]

# The schemes acfd-scan reads, in the order the refusal names them.
SCHEMES: tuple[str, ...] = ("http", "https", "rtsp", "rtmp", "srt", "udp")
HTTP_SCHEMES = ("http", "https")

# FFmpeg protocols a URL's decoder may open, per scheme. http(s) covers HLS: playlists, segments and
# AES-128 keys (crypto) over http or https, nothing else (no file:, data:, udp:, rtp:, httpproxy).
# rtsp is an FFmpeg demuxer, not a protocol: it opens tcp (interleaved), udp/rtp (its media) and tls.
PROTOCOLS: dict[str, str] = {
    "http": "http,https,tcp,tls,crypto",
    "https": "http,https,tcp,tls,crypto",
    "rtsp": "tcp,udp,rtp,srtp,tls",
    "rtmp": "rtmp,rtmps,tcp,tls",
    "srt": "srt",
    "udp": "udp",
}

# Content-Types of HLS playlists (RFC 8216 and what servers send in practice).
HLS_TYPES = frozenset({
    "application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl",
})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URI_ATTR = re.compile(r'(?:^|[:,])URI="([^"]*)"')  # the URI attribute, not X-ASSET-URI
_GIB = 1 << 30


class UrlError(AcfdError):
    """A URL cannot be read (refused scheme, probe failure): one line, no password in it."""


@dataclass(frozen=True)
class UrlPolicy:
    """Limits of the http(s) probe and of FFmpeg's redirects. A scan uses :data:`POLICY`, these defaults
    (change them here: decode workers are separate processes that import this module afresh); a library
    caller may pass its own to :func:`probe_http`, :func:`url_item` and :func:`ffmpeg_options`."""

    max_redirects: int = 5  # redirects followed by the probe, and by FFmpeg itself (max_redirects)
    # A generous bound on a single video (a 4K feature film at high bitrate is 20-60 GB); above it the
    # URL is refused before any decoding, e.g. a disk image or a backup someone linked by mistake.
    max_bytes: int = 64 * _GIB
    max_playlist_bytes: int = 4 << 20  # an HLS playlist is text: a few kB, a long VOD a few MB
    max_variants: int = 20  # variant playlists of an HLS master playlist read by the probe

    def __post_init__(self) -> None:
        if self.max_redirects < 0 or self.max_bytes < 1 or self.max_playlist_bytes < 1 or self.max_variants < 1:
            raise ValueError("UrlPolicy limits must be positive (max_redirects >= 0)")


POLICY = UrlPolicy()


# -- what a URL is ---------------------------------------------------------------------------------------

def is_url(text: str) -> bool:
    """Whether ``text`` is written as a URL (``scheme://...``) rather than a path; any scheme."""
    return bool(_SCHEME.match(text))


def scheme_of(url: str) -> str:
    """The URL's scheme, lower case ('' when ``url`` is not written as a URL)."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else ""


def public_url(url: str) -> str:
    """``url`` without any ``user:password@``: what is stored, printed and keyed on."""
    if not is_url(url):
        return url
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def redact(text: str, url: str) -> str:
    """``text`` with ``url``'s credentials removed: the URL itself becomes its public form, and the
    password (as written and percent-decoded) anywhere else becomes ``***``."""
    if not is_url(url):
        return text
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return text
    userinfo = parts.netloc.rpartition("@")[0]
    out = text.replace(url, public_url(url)).replace(userinfo + "@", "")
    password = userinfo.partition(":")[2]
    for secret in sorted({password, urllib.parse.unquote(password)} - {""}, key=len, reverse=True):
        out = out.replace(secret, "***")
    return out


def check_url(url: str) -> str:
    """The URL's scheme (lower case) when acfd-scan reads it; else :class:`UrlError` in one line."""
    scheme = scheme_of(url)
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises on a port that is not a number
        readable = True
    except ValueError:
        # Never quoted: a password with an unencoded '/', '?' or '#' ends up here, in the "host".
        host, readable = None, False
    if scheme not in SCHEMES:
        where = public_url(url) if readable else f"a {scheme} URL whose host cannot be read"
        raise UrlError(f"unsupported scheme {scheme!r} in {where}: acfd-scan reads {', '.join(SCHEMES)}")
    if not readable:
        raise UrlError(f"a {scheme} URL whose host and port cannot be read (percent-encode special characters "
                       "in a user name or password)")
    if scheme != "udp" and not host:  # udp://@:1234 (listen on every interface) has no host
        raise UrlError(f"no host in {public_url(url)}")
    return scheme


def _credentials(url: str) -> tuple[str, str] | None:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return None
    return urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(p.scheme.lower())
    return p.scheme.lower(), (p.hostname or "").lower(), p.port or default


# -- FFmpeg ----------------------------------------------------------------------------------------------

def ffmpeg_options(url: str, timeout_s: float, policy: UrlPolicy | None = None) -> dict[str, str]:
    """Options for ``av.open(url, options=..., timeout=(timeout_s, timeout_s))``.

    - ``protocol_whitelist`` (format context; inherited by every nested open: HLS playlists, segments,
      keys, redirects): the protocols of :data:`PROTOCOLS` for the URL's scheme;
    - ``rw_timeout`` (every URL protocol, microseconds): a read or write that waits longer fails;
    - http(s): ``max_redirects`` (FFmpeg follows redirects of segments and of the URL itself);
    - rtsp: ``timeout`` (the rtsp demuxer's socket I/O timeout, microseconds) and ``rtsp_flags``
      ``prefer_tcp``: interleaved over the RTSP connection when the server allows it, since over UDP a
      reader slower than real time (face detection is) loses the packets that arrive while it works
      (measured: the last 5 of 30 frames of a clip, stored as a verdict on part of it).
    PyAV's own ``timeout`` (an interrupt callback) bounds opening and each read on top of these.
    """
    scheme = check_url(url)
    policy = policy or POLICY
    micros = str(max(1, int(timeout_s * 1_000_000)))
    opts = {"protocol_whitelist": PROTOCOLS[scheme], "rw_timeout": micros}
    if scheme in HTTP_SCHEMES:
        opts["max_redirects"] = str(policy.max_redirects)
    elif scheme == "rtsp":
        opts["timeout"] = micros
        opts["rtsp_flags"] = "prefer_tcp"
    return opts


# -- the http(s) probe -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HttpFacts:
    """What an http(s) server says about a URL (None: it did not say)."""

    url: str  # the final URL after redirects, public (no credentials)
    content_type: str | None  # lower case, without parameters
    size: int | None  # Content-Length (of the whole file, also when asked for one byte)
    mtime_ns: int | None  # Last-Modified, ns since the epoch
    etag: str | None  # as sent, quotes and W/ included
    redirects: int = 0
    hls: bool = False  # an HLS playlist (checked: see probe_http)

    @property
    def validators(self) -> bool:
        """Whether the server gave anything to tell a changed resource by (resume needs one)."""
        return self.etag is not None or self.size is not None or self.mtime_ns is not None


@dataclass
class _Response:
    url: str  # private (credentials kept where the origin is the same)
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""
    redirects: int = 0


@dataclass
class _Session:
    """One probe: its limits, and the credentials of the URL as given (sent only to its origin)."""

    timeout_s: float
    policy: UrlPolicy
    auth: str | None = field(default=None, repr=False)
    origin: tuple[str, str, int | None] | None = None

    @classmethod
    def for_url(cls, url: str, timeout_s: float, policy: UrlPolicy) -> _Session:
        cred = _credentials(url)
        auth = None
        if cred is not None:
            auth = "Basic " + base64.b64encode(f"{cred[0]}:{cred[1]}".encode()).decode("ascii")
        return cls(timeout_s, policy, auth, _origin(url))

    def _reason(self, e: BaseException, host: str) -> str:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, (TimeoutError, socket.timeout)):
            return f"timed out after {self.timeout_s:g} s"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve host {host!r}"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({e.verify_message})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(e, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
        if isinstance(e, http.client.HTTPException):
            return f"not a valid HTTP response ({type(e).__name__})"
        if isinstance(e, OSError):
            return e.strerror or type(e).__name__
        return f"{type(e).__name__}: {e}"

    def _once(self, url: str, method: str, one_byte: bool, read: int) -> _Response:
        """One request, no redirects followed. ``read``: body bytes to keep (0: none)."""
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        conn_cls = http.client.HTTPSConnection if p.scheme.lower() == "https" else http.client.HTTPConnection
        target = urllib.parse.quote(p.path or "/", safe="/%:@!$&'()*+,;=~-._") + (f"?{p.query}" if p.query else "")
        headers = {"User-Agent": "acfd-scan", "Accept": "*/*", "Connection": "close"}
        if one_byte:
            headers["Range"] = "bytes=0-0"
        if self.auth is not None and _origin(url) == self.origin:
            headers["Authorization"] = self.auth  # never to another origin (a redirect elsewhere)
        conn = conn_cls(host, p.port, timeout=self.timeout_s)
        try:
            conn.request(method, target, headers=headers)
            resp = conn.getresponse()
            body = b""
            if read and method == "GET" and 200 <= resp.status < 300:
                body = resp.read(read + 1)
            return _Response(url, resp.status, resp.reason or "", {k.lower(): v for k, v in resp.getheaders()}, body)
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise UrlError(self._reason(e, host)) from None
        finally:
            conn.close()

    def fetch(self, url: str, body: int = 0) -> _Response:
        """HEAD ``url`` (``body`` 0) or GET up to ``body`` bytes, following redirects; a HEAD the server
        refuses is asked again as a GET of one byte. Raises :class:`UrlError` for failures."""
        redirects = 0
        while True:
            if body:
                r = self._once(url, "GET", False, body)
            else:
                r = self._once(url, "HEAD", False, 0)
                if r.status >= 400 and r.status not in (404, 410):
                    # HEAD refused (405, 501) or signed for GET only (403 from presigned links): ask for a byte
                    r = self._once(url, "GET", True, 0)
            if r.status in (301, 302, 303, 307, 308):
                loc = r.headers.get("location")
                if not loc:
                    raise UrlError(f"HTTP {r.status} {r.reason} without a Location")
                nxt = urllib.parse.urljoin(url, loc.strip())
                scheme = scheme_of(nxt) or urllib.parse.urlsplit(nxt).scheme.lower()
                if scheme not in HTTP_SCHEMES:
                    raise UrlError(f"redirect to an unsupported scheme {scheme!r} ({public_url(nxt)})")
                redirects += 1
                if redirects > self.policy.max_redirects:
                    raise UrlError(f"too many redirects (more than {self.policy.max_redirects})")
                url = nxt
                continue
            if not 200 <= r.status < 300:
                raise UrlError(f"HTTP {r.status} {r.reason}".rstrip())
            r.redirects = redirects
            return r


def _size(r: _Response) -> int | None:
    cr = r.headers.get("content-range", "")
    if r.status == 206 and "/" in cr:
        total = cr.rpartition("/")[2].strip()
        return int(total) if total.isdigit() else None
    cl = r.headers.get("content-length", "").strip()
    return int(cl) if cl.isdigit() else None


def _mtime_ns(value: str | None) -> int | None:
    if not value:
        return None
    try:
        t = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return int(t.timestamp()) * 1_000_000_000 if t.tzinfo is not None else None


def _content_type(r: _Response) -> str | None:
    ct = r.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return ct or None


def probe_http(url: str, timeout_s: float, policy: UrlPolicy | None = None) -> HttpFacts:
    """Check an http(s) URL before decoding it; its facts, or :class:`UrlError` in one line.

    ``timeout_s`` bounds the connection and each read (the scan's ``--timeout``). Refused: any status
    other than 2xx after redirects ("HTTP 404 Not Found"), more than ``policy.max_redirects`` redirects
    or one to another scheme, an HTML page (a login or error page served with 200), a Content-Length
    over ``policy.max_bytes``. An HLS playlist (by Content-Type or a ``.m3u8``/``.m3u`` path) is read
    (:func:`_check_playlist`)."""
    if scheme_of(url) not in HTTP_SCHEMES:
        raise UrlError(f"not an http(s) URL: {public_url(url)}")
    check_url(url)
    policy = policy or POLICY
    session = _Session.for_url(url, timeout_s, policy)
    r = session.fetch(url)
    ctype = _content_type(r)
    if ctype in HTML_TYPES:
        raise UrlError(f"not a video: the server sent an HTML page ({ctype})")
    size = _size(r)
    if size is not None and size > policy.max_bytes:
        raise UrlError(f"too large: {size} bytes, more than the limit of {policy.max_bytes} bytes "
                       f"({policy.max_bytes / _GIB:g} GiB)")
    path = urllib.parse.urlsplit(r.url).path.lower()
    hls = ctype in HLS_TYPES or path.endswith((".m3u8", ".m3u"))
    if hls:
        _check_playlist(session, r.url, url)
    return HttpFacts(public_url(r.url), ctype, size, _mtime_ns(r.headers.get("last-modified")),
                     r.headers.get("etag"), r.redirects, hls)


# -- HLS playlists ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Playlist:
    variants: list[str]  # absolute URLs of variant playlists (master playlist)
    segments: list[str]  # absolute URLs of media segments (media playlist)
    ended: bool  # #EXT-X-ENDLIST: a VOD or a finished event


def _read_playlist(session: _Session, url: str, shown: str) -> _Playlist:
    limit = session.policy.max_playlist_bytes
    r = session.fetch(url, body=limit)
    if len(r.body) > limit:
        raise UrlError(f"HLS playlist {shown} is larger than {limit} bytes")
    text = r.body.decode("utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise UrlError(f"not an HLS playlist (no #EXTM3U): {shown}")
    variants: list[str] = []
    segments: list[str] = []
    others: list[str] = []  # keys, init sections, renditions: must be http(s) and not the playlist too
    next_is_variant = False
    for ln in lines:
        if ln.startswith("#"):
            if ln.startswith("#EXT-X-STREAM-INF"):
                next_is_variant = True
            for uri in _URI_ATTR.findall(ln):
                (variants if ln.startswith(("#EXT-X-MEDIA:", "#EXT-X-I-FRAME-STREAM-INF")) else others).append(uri)
            continue
        (variants if next_is_variant else segments).append(ln)
        next_is_variant = False
    me = {_no_fragment(public_url(url)), _no_fragment(public_url(r.url))}
    absolute = {}
    for uri in [*variants, *segments, *others]:
        full = urllib.parse.urljoin(r.url, uri)
        scheme = urllib.parse.urlsplit(full).scheme.lower()
        if scheme not in HTTP_SCHEMES:
            raise UrlError(f"the HLS playlist points to an unsupported scheme {scheme!r} ({public_url(full)})")
        if _no_fragment(public_url(full)) in me:
            raise UrlError(f"the HLS playlist points to itself ({shown})")
        absolute[uri] = full
    ended = any(ln.startswith("#EXT-X-ENDLIST") for ln in lines)
    return _Playlist([absolute[u] for u in variants], [absolute[u] for u in segments], ended)


def _no_fragment(url: str) -> str:
    return url.split("#", 1)[0]


def _check_playlist(session: _Session, final_url: str, given: str) -> None:
    """An HLS playlist's entries are all http(s) and none is the playlist itself; a master playlist's
    variants (the first ``policy.max_variants``) are media playlists, not master playlists again (FFmpeg
    would follow such a loop until its timeout); the first segment of the first media playlist answers.
    FFmpeg checks nothing of this beyond its protocol whitelist: these give a clear line early."""
    shown = public_url(given)
    top = _read_playlist(session, final_url, shown)
    media = top
    for i, v in enumerate(top.variants[: session.policy.max_variants]):
        sub = _read_playlist(session, v, public_url(v))
        if sub.variants:
            raise UrlError(f"the HLS variant playlist {public_url(v)} is a master playlist again (a loop?)")
        if i == 0:
            media = sub
    if not media.segments:
        if media.ended:
            raise UrlError(f"the HLS playlist has no segments: {shown}")
        return  # a live playlist before its first segment: the decoder waits for one
    first = media.segments[0]
    try:
        session.fetch(first)
    except UrlError as e:
        raise UrlError(f"HLS segment {public_url(first)}: {e}") from None


# -- a URL as a scan item ----------------------------------------------------------------------------------

def url_item(url: str, timeout_s: float, policy: UrlPolicy | None = None) -> Candidate:
    """``url`` as a scan item: ``path`` its public URL, ``url`` the URL as given (what the decoder
    opens), and for http(s) the probe's validators (``size`` = Content-Length, ``mtime_ns`` =
    Last-Modified, ``etag``) or its one-line ``error``. rtsp, rtmp, srt and udp are not probed (no
    validators: such a URL is scanned again by every run). A refused scheme raises :class:`UrlError`
    (a scan refuses it before starting: :func:`check_url`)."""
    scheme = check_url(url)
    shown = public_url(url)
    if scheme not in HTTP_SCHEMES:
        return Candidate(path=shown, url=url)
    try:
        facts = probe_http(url, timeout_s, policy)
    except UrlError as e:
        return Candidate(path=shown, url=url, error=redact(str(e), url))
    return Candidate(path=shown, url=url, size=facts.size, mtime_ns=facts.mtime_ns, etag=facts.etag)
