"""`acfd-train`: -h everywhere, every option explained, `fit -h` lists the presets and the defaults,
and a refused or failed `fit` leaves no run folder (and no file) behind that it did not find there."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from acfd.schemas.errors import AcfdError
from acfd.train.cli import main
from acfd.train.config import PRESETS, resolve_config
from acfd.train.fit import FitError, FitOptions, fit
from click.testing import CliRunner

from tests.model_helpers import TinyPairs

COMMANDS = sorted(main.commands)


def _invoke(args: list[str]) -> click.testing.Result:
    return CliRunner().invoke(main, args, prog_name="acfd-train")


def test_the_commands_are_all_there() -> None:
    # The loops below see every command; a new one is checked the day it is added.
    assert {"synth", "prepare", "fit", "evaluate", "export", "engine", "build"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_dash_h_is_help_on_the_group_and_every_command(command: str | None) -> None:
    args = [command] if command else []
    r = _invoke([*args, "-h"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"Usage: acfd-train {command + ' ' if command else ''}[OPTIONS]")
    assert r.output == _invoke([*args, "--help"]).output
    assert "-h, --help" in r.output


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{name} {p.opts[0]}"
        for name, cmd in [("acfd-train", main), *sorted(main.commands.items())]
        for p in cmd.params
        if isinstance(p, click.Option) and not (p.help or "").strip()
    ]
    assert missing == []
    # ... and the help is what `-h` shows.
    build = " ".join(_invoke(["build", "-h"]).output.split())
    assert "--run PATH Training run directory (or its model.safetensors)." in build
    assert "--out DIRECTORY Folder for model.onnx, model.fp16.onnx and model.plan." in build


def test_engine_and_build_share_the_tensorrt_options() -> None:
    # One decorator: same names, defaults and help in both commands, in the same order.
    def trt(command: str) -> list[tuple[str, object, str | None]]:
        return [(p.name, p.default, getattr(p, "help", None)) for p in main.commands[command].params
                if p.name in {"min_batch", "opt_batch", "max_batch", "workspace_gb", "timing_cache"}]

    assert trt("engine") == trt("build")
    assert [(n, d) for n, d, _ in trt("engine")] == [
        ("min_batch", 1), ("opt_batch", 32), ("max_batch", 128), ("workspace_gb", None), ("timing_cache", None)]


def test_fit_help_lists_every_preset_and_shows_the_defaults() -> None:
    raw = _invoke(["fit", "-h"]).output
    flat = " ".join(raw.split())
    for name, cfg in PRESETS.items():
        # One line per preset, never re-wrapped: name, Table 3 row, description.
        row = f"row {cfg.table_row}: " if cfg.table_row is not None else ""
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(row + cfg.description)}$", raw, re.M), name
    assert "[default: paper; with --resume: the run's]" in flat
    assert "[default: from the preset; paper: 32]" in flat  # --batch-size
    assert "[default: from the preset; paper: 0.0001]" in flat  # --lr
    assert "[default: from the preset; paper: 299]" in flat  # --image-size
    assert "[default: from the preset; paper: bf16]" in flat  # --amp
    assert "auto, cpu, cuda, cuda:N. [default: auto]" in flat
    assert "DataLoader worker processes. [default: 0]" in flat


def test_fit_refuses_an_unknown_preset_with_the_choices(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    r = _invoke(["fit", "--data", str(cache), "--out", str(tmp_path / "run"), "--preset", "papr"])
    assert r.exit_code == 1
    assert r.output == f"Error: unknown preset 'papr'; choose one of {', '.join(PRESETS)}\n"
    assert not (tmp_path / "run").exists()


# -- a fit that fails leaves nothing it created -----------------------------------------------------
SIZE = 32


def _cfg():
    return resolve_config("single-metric", image_size=SIZE, batch_size=2, max_steps=3)


class _Breaks(TinyPairs):
    """TinyPairs whose items become unreadable after ``good`` reads (a truncated crop file)."""

    def __init__(self, good: int) -> None:
        super().__init__(8, SIZE, seed=4)
        self.good = good

    def __getitem__(self, i: int) -> dict:
        if self.good <= 0:
            raise AcfdError("cannot read crops 000.npy: truncated")
        self.good -= 1
        return super().__getitem__(i)


def test_fit_on_a_bad_cache_leaves_no_run_folder(tmp_path: Path) -> None:
    not_a_cache = tmp_path / "not-a-cache"
    not_a_cache.mkdir()
    out = tmp_path / "runs" / "a"
    r = _invoke(["fit", "--data", str(not_a_cache), "--out", str(out), "--quiet"])
    assert r.exit_code == 1
    assert r.output == f"Error: {not_a_cache} is not a crop cache (no cache.json): run `acfd-train prepare` first\n"
    assert not (tmp_path / "runs").exists()  # nor the parent it would have created


def test_fit_on_a_bad_device_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FitError, match="unknown device 'bogus'"):
        fit(_cfg(), FitOptions(out=tmp_path / "new" / "run", device="bogus", progress=False), TinyPairs(8, SIZE))
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(FitError, match="unknown device"):
        fit(_cfg(), FitOptions(out=existing, device="bogus", progress=False), TinyPairs(8, SIZE))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "keep me"


def test_fit_failing_before_its_first_checkpoint_removes_only_what_it_created(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(AcfdError, match="truncated"):
        fit(_cfg(), FitOptions(out=out, progress=False), _Breaks(good=0))
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.json").write_text("{}")  # there before: rewritten by fit, never deleted
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(AcfdError, match="truncated"):
        fit(_cfg(), FitOptions(out=existing, progress=False), _Breaks(good=0))
    assert sorted(p.name for p in existing.iterdir()) == ["config.json", "notes.txt"]
    # A config.json that was not there before is removed again.
    (existing / "config.json").unlink()
    with pytest.raises(AcfdError, match="truncated"):
        fit(_cfg(), FitOptions(out=existing, progress=False), _Breaks(good=0))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "keep me"


def test_fit_failing_after_a_checkpoint_keeps_the_run(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(AcfdError, match="truncated"):
        # Two good items: step 1 runs and is checkpointed, step 2 fails on its first item.
        fit(_cfg(), FitOptions(out=out, progress=False, checkpoint_every=1), _Breaks(good=2))
    assert (out / "checkpoint" / "state.json").is_file() and (out / "config.json").is_file()
