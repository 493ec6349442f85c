"""Content hashes of video files: one definition for the scanner (resume, copies) and training (model cards)."""

from __future__ import annotations

import hashlib
import os
import stat

HASH_CHUNK = 1 << 20


def content_hash(path: str | os.PathLike[str], size: int | None = None) -> str | None:
    """``ht1:`` + sha256 of the size, the first and the last MiB of a regular file (None if unreadable).

    Cheap on large archives (at most 2 MiB read per file) and stable across copies and renames.
    Anything that is not a regular file (a FIFO, a device) is never opened: reading it could block.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb", opener=_open_nonblocking) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            size = st.st_size if size is None else size
            h.update(str(size).encode())
            h.update(f.read(HASH_CHUNK))
            if size > 2 * HASH_CHUNK:
                f.seek(size - HASH_CHUNK)
                h.update(f.read(HASH_CHUNK))
            elif size > HASH_CHUNK:
                h.update(f.read())
    except OSError:
        return None
    return "ht1:" + h.hexdigest()


def _open_nonblocking(path: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever.
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
