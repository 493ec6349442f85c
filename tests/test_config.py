"""One table of scanner defaults (acfd.scanner.config): every place that takes a default reads it."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
from acfd.scanner.cli import main
from acfd.scanner.cli_validate import validate_cmd
from acfd.scanner.config import DEFAULTS, ScanDefaults
from acfd.scanner.faces import FaceDetector
from acfd.scanner.pipeline import ScanConfig
from acfd.scanner.stages import FramesConfig
from acfd.scanner.validate import ValidateConfig

# option name in the CLIs -> field of the defaults table
OPTIONS = {"device": "device", "decoder": "decoder", "timeout_s": "timeout_s", "detector_model": "detector",
           "min_face_score": "min_face_score"}  # fmt: skip


def _defaults(obj: object) -> dict[str, object]:
    return {f.name: f.default for f in fields(obj)}  # type: ignore[arg-type]


def test_configs_take_their_defaults_from_the_table() -> None:
    scan = _defaults(ScanConfig)
    assert (scan["device"], scan["fps"], scan["decoder"], scan["timeout_s"], scan["detector_model"],
            scan["min_face_score"], scan["detect_max_side"], scan["store_crops"]) == (
        DEFAULTS.device, DEFAULTS.fps, DEFAULTS.decoder, DEFAULTS.timeout_s, DEFAULTS.detector,
        DEFAULTS.min_face_score, DEFAULTS.detect_max_side, DEFAULTS.store_crops)  # fmt: skip
    val = _defaults(ValidateConfig)
    assert (val["device"], val["fps"], val["detector_model"], val["min_face_score"], val["decoder"],
            val["timeout_s"]) == (DEFAULTS.device, DEFAULTS.fps, DEFAULTS.detector, DEFAULTS.min_face_score,
                                  DEFAULTS.decoder, DEFAULTS.timeout_s)  # fmt: skip
    work = _defaults(FramesConfig)
    assert (work["decoder"], work["detector_model"], work["min_face_score"], work["detect_max_side"]) == (
        DEFAULTS.decoder, DEFAULTS.detector, DEFAULTS.min_face_score, DEFAULTS.detect_max_side)
    # The face detector sees faces as a scan does unless told otherwise ("full" before: a scan used "auto").
    det = inspect.signature(FaceDetector.__init__).parameters
    assert (det["model"].default, det["min_score"].default, det["max_side"].default) == (
        "auto", DEFAULTS.min_face_score, DEFAULTS.detect_max_side) and DEFAULTS.detector == "auto"


@pytest.mark.parametrize("command", ["scan", "validate"])
def test_cli_options_default_to_the_table(command: str) -> None:
    cmd = main.commands["scan"] if command == "scan" else validate_cmd
    opts = {p.name: p.default for p in cmd.params}
    for option, field in OPTIONS.items():
        assert opts[option] == getattr(DEFAULTS, field), option
    if command == "scan":
        assert opts["store_crops"] == DEFAULTS.store_crops


@pytest.mark.parametrize(
    "bad", [{"fps": 0.0}, {"fps": float("nan")}, {"device": "tpu"}, {"detector": "medium"},
            {"min_face_score": 1.5}, {"timeout_s": 0.0}],  # fmt: skip
)
def test_the_table_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ScanDefaults(**bad)  # type: ignore[arg-type]


def test_every_frame_is_a_sampling_mode_not_a_magic_rate() -> None:
    import numpy as np
    from acfd.scanner.decode import EVERY_FRAME, DecodeError, Sampling, select_indices
    from acfd.schemas.settings import verdict_key

    assert EVERY_FRAME == Sampling(fps=None, every=True) and EVERY_FRAME.fps is None
    assert EVERY_FRAME.every_frame and EVERY_FRAME.describe() == "every frame"
    assert select_indices(np.arange(7) / 25.0, EVERY_FRAME) == list(range(7))
    with pytest.raises(DecodeError, match="exactly one"):
        Sampling(fps=1.0, every=True)
    cfg = ScanConfig(paths=("x",), every_frame=True, fps=None)
    assert cfg.sampling == EVERY_FRAME
    with pytest.raises(Exception, match="excludes"):
        ScanConfig(paths=("x",), every_frame=True, fps=None, frames=8)
    # resume: a store written when --every-frame was stored as fps 1000 keeps its verdicts
    new = cfg.as_args()
    assert verdict_key(new) == verdict_key({"fps": 1000.0}) != verdict_key({"fps": 1.0})
    assert Sampling(fps=2.0).describe() == "2 frames/s" and Sampling(fps=None, frames=8).describe() == "8 frames per video"
