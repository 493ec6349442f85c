"""Sources: where a scan's items come from, yielded lazily.

An item (:class:`~acfd.scanner.discover.Candidate`) owns its identity (``key``, ``display``), its resume
test (:meth:`~acfd.scanner.discover.Candidate.unchanged_since`), what a decoder opens (``target``) and
its content hash. :class:`LocalFiles` walks folders and files; other sources (file lists, URLs, live
streams) yield their own items through the same interface.

:class:`Lookahead` runs a source ahead of the scan in a thread: the first video is scanned while a
large archive is still being walked, and the total is known as soon as the walk ends.
"""

from __future__ import annotations

import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from .discover import Candidate, discover, display_path


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


_END = object()


class Lookahead:
    """Iterates ``source`` in a daemon thread, ``limit`` items ahead of the consumer at most.

    ``found`` counts the items walked so far; ``total`` is that count once the source is exhausted
    (None before). An exception of the source is raised in the consumer, in its place. ``close()``
    stops the walk (the consumer stopped early).
    """

    def __init__(self, source: Iterator[Candidate], limit: int = 100_000) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize=limit)
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

    def __iter__(self) -> Iterator[Candidate]:
        while True:
            x = self._q.get()
            if x is _END:
                return
            if isinstance(x, BaseException):
                raise x
            yield x  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
