"""Text for terminals: file names and messages may hold control characters; never print them raw.

A file name can contain ``ESC[2J`` (clear the screen), an OSC sequence (set the window title, or
write a hyperlink), or a newline that would split one report line into two. Every path and every
message that may quote one goes through :func:`printable` before it reaches stdout or stderr.
"""

from __future__ import annotations

import re

# C0 controls (newline, ESC, ...), DEL, and C1 controls (CSI 0x9b, OSC 0x9d, ...)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(s: object) -> str:
    """``s`` as text with every control character shown as ``\\xNN`` (one line, inert)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(s))
