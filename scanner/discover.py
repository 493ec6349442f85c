"""Discover: walk the given paths and yield video candidates, and the paths that cannot be read.

- A file is a candidate when its extension is a video extension, or when its first bytes look like a
  video container (ISO-BMFF ``ftyp``, Matroska/WebM EBML, AVI RIFF, FLV, MPEG-PS/TS, ASF, Ogg).
  A file named on the command line is always a candidate. A file with a video extension but other
  content stays a candidate: decoding it gives a clear error row instead of silence.
- Hidden entries (name starting with ``.``, e.g. ``._clip.mp4`` AppleDouble files) and system
  folders/files (``$RECYCLE.BIN``, ``System Volume Information``, ``@eaDir``, ``Thumbs.db``, ...)
  are skipped.
- Symbolic links are followed; each directory is entered once (by device and inode), so directory
  loops end; a file reached twice through links or hard links is reported once as a duplicate.
- Broken links, link loops and unreadable files or folders become candidates with ``error`` set, and so
  do FIFOs, sockets and devices named like videos or named on the command line (never opened).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

VIDEO_EXTENSIONS = frozenset(
    ext.lower()
    for ext in (
        ".mp4 .m4v .mov .qt .mkv .webm .avi .wmv .asf .flv .f4v .mpg .mpeg .mpe .m2v .vob .ts .mts "
        ".m2ts .3gp .3g2 .ogv .mxf .dv .divx .y4m .rm .rmvb .h264 .264 .hevc .265"
    ).split()
)

SYSTEM_NAMES = frozenset(
    n.lower()
    for n in (
        "$RECYCLE.BIN",
        "System Volume Information",
        "@eaDir",
        "lost+found",
        "Thumbs.db",
        "desktop.ini",
        "__MACOSX",
        "RECYCLER",
        "#snapshot",
    )
)

SNIFF_BYTES = 64


class Idle:
    """In a scan's item stream: nothing is ready yet, the source is still being read (a ``--files-from -``
    pipe waiting for its next path). An executor with work in flight goes on with it instead of waiting,
    so a video's result is stored when it is done, not when the next path arrives. Only :data:`IDLE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


IDLE = Idle()


@dataclass(frozen=True)
class Candidate:
    """A file to scan (``error`` None), or a path that cannot be scanned (``error`` says why).

    A URL (:func:`acfd.scanner.urls.url_item`) is an item too: ``path`` is the URL without any
    ``user:password@`` (its identity and what is shown), ``url`` the URL as given (what the decoder
    opens; never in ``repr``), ``size``/``mtime_ns``/``etag`` the server's Content-Length,
    Last-Modified and ETag.
    """

    path: str  # absolute; undecodable bytes kept as surrogate escapes (os.fsencode gives them back)
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None
    duplicate_of: str | None = None  # set for the second and later paths of one inode
    etag: str | None = None  # a URL's ETag (None for files)
    url: str | None = field(default=None, repr=False)  # a URL item: as given, credentials included

    @property
    def key(self) -> bytes:
        """The exact file-system bytes of the path."""
        return os.fsencode(self.path)

    @property
    def display(self) -> str:
        """The path for people and for text columns: undecodable bytes shown as U+FFFD."""
        return display_path(self.path)

    @property
    def target(self) -> str:
        """What a decoder opens for this item (a local file: its path; a URL: the URL as given)."""
        return self.url if self.url is not None else self.path

    def unchanged_since(self, size: int | None, mtime_ns: int | None, etag: str | None = None) -> bool:
        """Whether the item is as it was when a stored row saw it (resume).

        A file: same size and mtime (an unreadable path has neither, so its stored error stands until
        ``--retry-errors``); ``etag`` is not used. A URL: the server gave at least one of ETag,
        Last-Modified and Content-Length now, and each one it gave equals the stored one; a URL
        without any (a failed probe, a server that gives none, rtsp...) is scanned again.
        """
        if self.url is None:
            return size == self.size and mtime_ns == self.mtime_ns
        given = [(mine, stored) for mine, stored in ((self.etag, etag), (self.mtime_ns, mtime_ns), (self.size, size))
                 if mine is not None]
        return bool(given) and all(mine == stored for mine, stored in given)

    def content_hash(self) -> str | None:
        """The ``ht1:`` hash of the file's bytes (None for a path that cannot be read, and for a URL:
        hashing it would mean reading the whole stream a second time)."""
        from acfd.schemas.hashing import content_hash

        return None if self.error is not None or self.url is not None else content_hash(self.path, self.size)


def display_path(path: str) -> str:
    return os.fsencode(path).decode("utf-8", errors="replace")


def sniff_video(head: bytes) -> bool:
    """Whether the first bytes of a file look like a video container."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return True  # ISO base media (mp4, mov, 3gp)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return True  # Matroska / WebM (EBML)
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head.startswith(b"FLV\x01"):
        return True
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return True  # MPEG program stream / MPEG-1/2 video
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return True  # ASF / WMV
    if head.startswith(b"OggS") and b"theora" in head:
        return True
    if len(head) > 188 and head[0] == head[188] == 0x47:
        return True  # MPEG transport stream (sync byte every 188 bytes)
    if head.startswith(b"YUV4MPEG2"):
        return True
    return False


def _skip_name(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def _err(path: str, e: OSError, what: str = "") -> Candidate:
    if e.errno == errno.ELOOP:
        msg = "symbolic link loop"
    elif e.errno == errno.ENOENT and os.path.islink(path):
        msg = f"broken symbolic link (target {display_path(os.readlink(path))!r} does not exist)"
    elif e.errno == errno.ENOENT:
        msg = "no such file or directory"
    elif e.errno in (errno.EACCES, errno.EPERM):
        msg = f"permission denied{what}"
    else:
        msg = f"{e.strerror or e.__class__.__name__}{what}"
    return Candidate(path=path, error=msg)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


class _Walker:
    def __init__(self, recursive: bool, sniff: bool) -> None:
        self.recursive = recursive
        self.sniff = sniff
        self.dirs_seen: set[tuple[int, int]] = set()
        self.files_seen: dict[tuple[int, int], str] = {}
        self.errors_seen: set[str] = set()  # paths already reported as errors

    def file(self, path: str, explicit: bool) -> Candidate | None:
        """The candidate for ``path``; None when it is not one, or when this very path was already
        given (named twice, or named and also inside a folder given): one path, one item."""
        c = self._file(path, explicit)
        if c is None:
            return None
        if c.error is not None:
            if path in self.errors_seen:
                return None
            self.errors_seen.add(path)
        elif c.duplicate_of == path:
            return None
        return c

    def _file(self, path: str, explicit: bool) -> Candidate | None:
        ext = os.path.splitext(path)[1].lower()
        is_video_ext = ext in VIDEO_EXTENSIONS
        try:
            st = os.stat(path)  # follows links: ELOOP / ENOENT for loops and broken links
        except OSError as e:
            # A dangling link called notes.txt is not worth a row; one called clip.mp4 is.
            return _err(path, e) if explicit or is_video_ext else None
        if not stat.S_ISREG(st.st_mode):
            # Never opened (a FIFO would block for ever); one named like a video still gets its row,
            # so every candidate is accounted for.
            if explicit or is_video_ext:
                return Candidate(path=path, error=f"not a regular file ({_file_kind(st.st_mode)})")
            return None
        if not (explicit or is_video_ext or self.sniff):
            return None
        try:
            # Opening proves the file is readable (permissions, ACLs, dead network mounts).
            with open(path, "rb") as f:
                head = f.read(SNIFF_BYTES * 4)
        except OSError as e:
            return _err(path, e, " (cannot open for reading)")
        if not (explicit or is_video_ext or sniff_video(head)):
            return None
        ident = (st.st_dev, st.st_ino)
        first = self.files_seen.get(ident)
        if first is None:
            self.files_seen[ident] = path
        return Candidate(
            path=path,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            duplicate_of=first,
        )

    def walk_dir(self, path: str) -> Iterator[Candidate]:
        try:
            st = os.stat(path)
        except OSError as e:
            yield _err(path, e)
            return
        ident = (st.st_dev, st.st_ino)
        if ident in self.dirs_seen:
            return  # a directory loop or a second link to a folder already walked
        self.dirs_seen.add(ident)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as e:
            yield _err(path, e, " (cannot list directory)")
            return
        subdirs = []
        for entry in entries:
            if _skip_name(entry.name):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                if self.recursive:
                    subdirs.append(entry.path)
                continue
            c = self.file(entry.path, explicit=False)
            if c is not None:
                yield c
        for d in subdirs:
            yield from self.walk_dir(d)


def discover(paths: Iterable[str | os.PathLike[str] | bytes], recursive: bool = False, sniff: bool = True,
             url_item: Callable[[str], Candidate | None] | None = None) -> Iterator[Candidate]:
    """Video candidates under ``paths`` in a stable order (sorted by name within each folder).

    Folders are walked one level deep, or entirely with ``recursive``. ``sniff`` also picks files
    without a video extension whose content looks like a video. ``url_item`` sees each input first
    (when it is a ``str``): the item it returns stands for that input (a URL, in its place in the
    order), None means the input is a path.
    """
    w = _Walker(recursive, sniff)
    for p in paths:
        if url_item is not None and isinstance(p, str):
            item = url_item(p)
            if item is not None:
                yield item
                continue
        path = os.path.abspath(os.fsdecode(p))
        if os.path.isdir(path):
            yield from w.walk_dir(path)
        else:
            c = w.file(path, explicit=True)
            if c is not None:
                yield c
