"""Sources: where a scan's items come from, yielded lazily.

An item (:class:`~acfd.scanner.discover.Candidate`) owns its identity (``key``, ``display``), its resume
test (:meth:`~acfd.scanner.discover.Candidate.unchanged_since`), what a decoder opens (``target``) and
its content hash. :class:`LocalFiles` walks folders and files; :class:`Inputs` is what a command line
names, paths and URLs mixed (:mod:`acfd.scanner.urls`); other sources (file lists, live streams) yield
their own items through the same interface.

:class:`Lookahead` runs a source ahead of the scan in a thread: the first video is scanned while a
large archive is still being walked, and the total is known as soon as the walk ends.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from acfd.schemas.errors import AcfdError

from .config import DEFAULTS
from .discover import IDLE, Candidate, Idle, discover, display_path
from .urls import UrlError, UrlPolicy, is_url, public_url, url_item


class Source(ABC):
    """A scan's input: yields its items in a stable order, lazily."""

    @abstractmethod
    def items(self) -> Iterator[Candidate]:
        """The items, one at a time (a source may be far larger than memory)."""

    @abstractmethod
    def describe(self) -> list[str]:
        """What the source is, for the scan's stored arguments (e.g. absolute paths)."""


@dataclass(frozen=True)
class LocalFiles(Source):
    """Files and folders on this machine (:func:`~acfd.scanner.discover.discover`)."""

    paths: tuple[str, ...]
    recursive: bool = False
    sniff: bool = True

    def items(self) -> Iterator[Candidate]:
        return discover(self.paths, self.recursive, self.sniff)

    def describe(self) -> list[str]:
        return [display_path(os.path.abspath(os.fsdecode(p))) for p in self.paths]


def mixed_items(entries: Iterable[str], recursive: bool, sniff: bool, timeout_s: float,
                policy: UrlPolicy | None = None) -> Iterator[Candidate]:
    """Paths and URLs in the order given, lazily: paths through one :func:`discover` walk (a file
    reached twice, or named twice, is one item), URLs as :func:`~acfd.scanner.urls.url_item` items,
    probed when the walk reaches them. A URL given again (the same without ``user:password@``) is left
    out; a URL of a refused scheme (``ftp://``...) is an item with its one-line error (a command line
    refuses it before the scan: :func:`~acfd.scanner.urls.check_url`)."""
    seen: set[str] = set()

    def url(p: str) -> Candidate | None:
        if not is_url(p):
            return None
        shown = public_url(p)
        if shown in seen:
            return _SKIP  # one row per URL and scan (the store's key)
        seen.add(shown)
        try:
            return url_item(p, timeout_s, policy)
        except UrlError as e:
            return Candidate(path=shown, error=str(e))

    return (c for c in discover(entries, recursive, sniff, url_item=url) if c is not _SKIP)


_SKIP = Candidate(path="")  # the mark of an input left out (a URL given twice)


@dataclass(frozen=True)
class Inputs(Source):
    """A command line's inputs in the order given (:func:`mixed_items`), each URL probed when the walk
    reaches it (``timeout_s``: the scan's ``--timeout``)."""

    inputs: tuple[str, ...]
    recursive: bool = False
    sniff: bool = True
    timeout_s: float = DEFAULTS.timeout_s
    policy: UrlPolicy | None = None  # None: acfd.scanner.urls.POLICY

    def items(self) -> Iterator[Candidate]:
        return mixed_items(self.inputs, self.recursive, self.sniff, self.timeout_s, self.policy)

    def describe(self) -> list[str]:
        """Absolute paths, and URLs without any ``user:password@``."""
        return [public_url(p) if is_url(p) else display_path(os.path.abspath(os.fsdecode(p))) for p in self.inputs]


@dataclass(frozen=True)
class FileList(Source):
    """The entries of a file list (``--files-from FILE``, ``-`` for standard input; :mod:`acfd.scanner.lists`),
    after the command line's ``inputs``: paths and URLs mixed (:func:`mixed_items`), read as the scan
    goes, so a list of millions of lines, or one still being written by ``find``, is never loaded at once."""

    list_path: str
    null: bool = False
    inputs: tuple[str, ...] = ()
    recursive: bool = False
    sniff: bool = True
    timeout_s: float = DEFAULTS.timeout_s
    policy: UrlPolicy | None = None

    def items(self) -> Iterator[Candidate]:
        return mixed_items(self._entries(), self.recursive, self.sniff, self.timeout_s, self.policy)

    def _entries(self) -> Iterator[str]:
        from .lists import EntryTooLong, entries

        yield from self.inputs
        shown = "-" if self.list_path == "-" else display_path(self.list_path)
        try:
            if self.list_path == "-":
                with _stdin_reader() as f:
                    yield from entries(f, self.null)
                return
            try:
                f = open(self.list_path, "rb")  # noqa: SIM115 - closed below, as the generator ends
            except OSError as e:
                raise ListError(f"cannot read --files-from {shown}: {e.strerror or e}") from e
            with f:
                yield from entries(f, self.null)
        except EntryTooLong as e:
            raise ListError(f"--files-from {shown}: {e}") from e

    def describe(self) -> list[str]:
        return Inputs(self.inputs).describe()


@contextlib.contextmanager
def _stdin_reader() -> Iterator[BinaryIO]:
    """Standard input as an unbuffered reader of its own (a copy of fd 0), or ``sys.stdin.buffer`` where
    stdin has no file descriptor (click's CliRunner).

    The list is read in a daemon thread (:class:`Lookahead`), which may still be blocked reading when
    the scan stops on a fatal error with the list open (a feeder such as ``inotifywait`` never closes
    it). In ``sys.stdin.buffer`` that thread holds the buffer's lock, and the interpreter aborts at exit
    ("could not acquire lock for <stdin> at interpreter shutdown", exit 134 instead of the scan's own
    code: seen with a full disk). An unbuffered reader has no lock.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield sys.stdin.buffer
        return
    with open(os.dup(fd), "rb", buffering=0) as f:
        yield f


class ListError(AcfdError):
    """A file list cannot be read (the scan stops: it does not know what else to scan)."""


_END = object()


class Lookahead:
    """Iterates ``source`` in a daemon thread, ``limit`` items ahead of the consumer at most.

    ``found`` counts the items walked so far; ``total`` is that count once the source is exhausted
    (None before). An exception of the source is raised in the consumer, in its place. ``close()``
    stops the walk (the consumer stopped early). ``idle_s``: when nothing arrives within that many
    seconds, yield :data:`~acfd.scanner.discover.IDLE` and try again at the next ``next()`` (None: wait).
    """

    def __init__(self, source: Iterator[Candidate], limit: int = 100_000, idle_s: float | None = None) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize=limit)
        self._idle_s = idle_s
        self._stop = threading.Event()
        self.found = 0
        self.total: int | None = None
        self._thread = threading.Thread(target=self._walk, args=(source,), name="acfd-discover", daemon=True)
        self._thread.start()

    def _put(self, x: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _walk(self, source: Iterator[Candidate]) -> None:
        try:
            for c in source:
                self.found += 1
                if not self._put(c):
                    return
            self.total = self.found
            self._put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(e)

    def __iter__(self) -> Iterator[Candidate | Idle]:
        while True:
            try:
                x = self._q.get(timeout=self._idle_s)
            except queue.Empty:
                yield IDLE
                continue
            if x is _END:
                return
            if isinstance(x, BaseException):
                raise x
            yield x  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
