"""The project's text stands on its own: no file cites a design document or numbered "contracts" that
are not in the repository (a reader could not follow them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# "DESIGN.md", "DESIGN §3", "contract 4", "Contracts 2-3".
CITATION = re.compile(r"\bDESIGN\b|DESIGN\.md|\b[Cc]ontracts? \d")


def _project_files() -> list[Path]:
    """Files git tracks, plus new ones it does not ignore (so a file is checked before its first commit)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_the_pattern_finds_citations() -> None:
    for text in ("see DESIGN.md", "(DESIGN §7)", "runtime (contract 4)", "Contract 3: float NCHW"):
        assert CITATION.search(text), text
    for text in ("the design", "contracts shared by all", "by contract or otherwise", "paper §4.2"):
        assert not CITATION.search(text), text


def test_no_file_cites_documents_that_are_not_in_the_repository() -> None:
    files = _project_files()
    assert ROOT / "README.md" in files and ROOT / "pyproject.toml" in files
    found = []
    for path in files:
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for n, line in enumerate(text.splitlines(), 1):
            if CITATION.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []
