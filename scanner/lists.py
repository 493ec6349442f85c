"""File lists: the entries of ``acfd-scan --files-from FILE`` (or ``-``, standard input), read lazily.

Two formats, as other tools write them:

- newline-separated (``find ... -print``, an editor): one entry per line; a trailing ``\\r`` is
  dropped (lists made on Windows), and blank lines and lines whose first non-blank character is
  ``#`` are ignored (comments). Leading and trailing spaces are part of the name: file names may
  have them.
- NUL-separated (``--null``; ``find ... -print0``, ``xargs -0``): every non-empty entry is a name,
  exactly as given: names may contain newlines and may start with ``#``.

Entries are bytes (file names need not be UTF-8); :func:`entries` decodes them the way the file
system does (``os.fsdecode``), so a path read from a list is the same path as one given on the
command line. The list is read in blocks of :data:`BLOCK` bytes: a list of millions of lines, or a
pipe that is still being written, is never held in memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 1 << 16
# The longest entry taken: far above any path (PATH_MAX is 4096) or URL a server accepts, far below what
# would hurt. A longer "line" means the list is something else (a binary file, a video given by mistake),
# and it must not grow in memory without end.
MAX_ENTRY = 1 << 16


class EntryTooLong(ValueError):
    """An entry of the list is longer than :data:`MAX_ENTRY` bytes (not a list of paths)."""

    def __init__(self, number: int, null: bool) -> None:
        what = "entry" if null else "line"
        super().__init__(f"{what} {number} is longer than {MAX_ENTRY} bytes: not a list of paths "
                         f"(a binary file{'' if null else ', or a NUL-separated list without --null'}?)")
        self.number = number


def raw_entries(stream: BinaryIO, null: bool = False) -> Iterator[bytes]:
    """The entries of a list as bytes, one at a time (see the module docstring for the formats).
    Raises :class:`EntryTooLong` for an entry over :data:`MAX_ENTRY` bytes."""
    sep = b"\0" if null else b"\n"
    # read1: what is there now, up to BLOCK (read(BLOCK) would wait for a pipe to fill the whole block)
    read = getattr(stream, "read1", stream.read)
    rest = b""
    number = 0  # entries (lines) read so far, blank ones and comments included
    while True:
        block = read(BLOCK)
        if not block:
            break
        parts = (rest + block).split(sep)
        rest = parts.pop()  # an unfinished entry waits for the next block
        for p in parts:
            number += 1
            if len(p) > MAX_ENTRY:
                raise EntryTooLong(number, null)
            e = _entry(p, null)
            if e is not None:
                yield e
        if len(rest) > MAX_ENTRY:
            raise EntryTooLong(number + 1, null)
    e = _entry(rest, null)  # the last entry may lack its separator
    if e is not None:
        yield e


def _entry(raw: bytes, null: bool) -> bytes | None:
    if null:
        return raw or None
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    stripped = raw.strip()
    if not stripped or stripped.startswith(b"#"):
        return None
    return raw


def entries(stream: BinaryIO, null: bool = False) -> Iterator[str]:
    """The entries as file-system strings (undecodable bytes kept as surrogate escapes)."""
    for raw in raw_entries(stream, null):
        yield os.fsdecode(raw)
