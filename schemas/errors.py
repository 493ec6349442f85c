"""Domain errors. Libraries raise these; each CLI turns them into one clear line, once."""

from __future__ import annotations


class AcfdError(Exception):
    """Base class of every error a user can cause and fix (bad input, bad model file, bad config)."""


class OutputClosed(Exception):
    """The reader of a command's output went away (``acfd-scan --jsonl - | head``): stop quietly, like
    other Unix tools. Not an :class:`AcfdError`: nothing is wrong with the input."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so a command commits what it has and stops (exit 143)."""
