"""``python -m acfd.scanner`` is ``acfd-scan``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main(prog_name="acfd-scan")
