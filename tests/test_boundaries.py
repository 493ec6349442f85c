"""Who may import whom: checked statically over every module, lazy imports included; the engine's own
modules import each other without a cycle; the training stack reaches the engine only as a plugin."""

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
    # The engine runs training runs through a plugin (acfd.engine.registry), never by importing acfd.train.
    ("engine", ("acfd.scanner", "acfd.train")),
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
                base = ".".join(mod_parts[: len(mod_parts) - node.level] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import name` may import the module pkg.name (`from . import registry`)
            found.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
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


def _engine_graph() -> dict[str, set[str]]:
    """engine module -> the engine modules it imports (lazy imports included)."""
    mods = {p.stem: p for p in (ROOT / "engine").glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for stem, path in mods.items():
        deps = set()
        for name in _imports(path, "acfd.engine"):
            if name.startswith("acfd.engine."):
                dep = name.split(".")[2]
                if dep in mods and dep != stem:
                    deps.add(dep)
        graph[stem] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle in ``graph`` as [a, b, ..., a], or [] when it is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": set(), "b": {"b2"}, "b2": {"b"}}) == ["b", "b2", "b"]


def test_engine_modules_import_each_other_without_a_cycle():
    graph = _engine_graph()
    # the split this test protects: the exporter and the backends share names and the scorer, not each other
    assert "export" not in graph["backends"] and "backends" not in graph["scorer"]
    assert {"signature", "scorer"} <= graph["export"] and "signature" in graph["backends"]
    assert graph["registry"] == set() and graph["signature"] == set()
    assert "registry" in graph["runtime"] and "registry" in graph["backends"]  # `from . import registry`
    cycle = _cycle(graph)
    assert not cycle, "engine import cycle: " + " -> ".join(cycle)


def test_only_the_registry_imports_modules_by_name():
    """Dynamic imports would step around the static rules above: in the engine only the registry's
    plugin hook (acfd.engine.registry.factory) imports a module by name."""
    found = []
    for path in sorted((ROOT / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in ("import_module", "__import__", "find_spec", "spec_from_file_location"):
                    found.append(f"{path.name}:{node.lineno} {name}")
    assert len(found) == 1 and found[0].startswith("registry.py:") and found[0].endswith("import_module"), found


# The scanner's view of a run directory: every scanner module imported, then runtime.load(RUN). A
# meta-path finder records who imports acfd.train first: it must be the registry's plugin hook.
_SCAN_A_RUN = """
import importlib, sys, traceback
from pathlib import Path
for m in {mods!r}:
    importlib.import_module(m)
assert not [m for m in sys.modules if m.startswith("acfd.train")], "the scanner imported acfd.train"
from acfd.engine import registry
assert registry._KINDS["torch-run"].factory is None, "torch-run registered before it was needed"
first = []

class Watch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "acfd.train" and not first:
            first.append([(Path(f.filename).name, f.name) for f in traceback.extract_stack()])
        return None

sys.meta_path.insert(0, Watch)
from acfd.engine.runtime import load
with load({run!r}, device="cpu") as b:
    print("backend", b.name, b.meta.input_size, b.model_id)
assert first, "acfd.train was never imported"
engine_frames = [f for f in first[0] if f[0] in ("registry.py", "runtime.py", "backends.py")]
print("first import of acfd.train from", engine_frames[-1])
assert engine_frames[-1] == ("registry.py", "factory"), first[0]
from acfd.train.engine_loader import load_branch
assert registry._KINDS["torch-run"].factory.load_run is load_branch
"""


def test_scanner_loads_a_run_through_the_plugin_hook(tmp_path):
    from tests.engine_helpers import tiny_run

    run = tiny_run(tmp_path / "run", image_size=64, preset="single-metric-att")
    mods = sorted(
        "acfd.scanner." + p.stem for p in (ROOT / "scanner").glob("*.py") if p.stem not in ("__init__", "__main__")
    )
    out = subprocess.run(
        [sys.executable, "-c", _SCAN_A_RUN.format(mods=mods, run=str(run))],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "backend torch 64 " in out.stdout
    assert "first import of acfd.train from ('registry.py', 'factory')" in out.stdout
