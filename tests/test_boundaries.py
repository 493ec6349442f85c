"""Who may import whom (the brief): checked statically over every module, lazy imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"schemas": "acfd.schemas", "engine": "acfd.engine", "scanner": "acfd.scanner", "train": "acfd.train"}
# (package folder, forbidden import prefixes)
RULES = [
    ("schemas", ("acfd.engine", "acfd.scanner", "acfd.train")),
    ("engine", ("acfd.scanner",)),
    ("scanner", ("acfd.train",)),
]


def _imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    mod_parts = [package, *path.relative_to(ROOT / package.split(".")[1]).with_suffix("").parts]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = mod_parts[: len(mod_parts) - node.level]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("folder,forbidden", RULES)
def test_static_import_rules(folder, forbidden):
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path, PACKAGES[folder]):
            if name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_scanner_import_does_not_load_training_stack():
    mods = sorted(
        "acfd.scanner." + p.stem for p in (ROOT / "scanner").glob("*.py") if p.stem not in ("__init__", "__main__")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.startswith('acfd.train')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
