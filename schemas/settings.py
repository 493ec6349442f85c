"""The resume key of a scan's settings: which settings change what a scan stores for a video.

A video is skipped on a rerun only when it was scanned with the same model AND the same settings
key. Two keys exist, because some settings change verdicts and others only whether a file fails:

- :func:`verdict_key`: sampling (``fps``/``frames``, "every frame"), face detector and its minimum
  score and detection size, decoder, aggregation strategy and minimum support. Used for videos whose
  stored status is ``ok``, ``no_face`` or ``skipped``.
- :func:`error_key`: the above plus the decode timeout and the worker memory limit, used for error
  rows, so that a file that failed under a too-small ``--worker-memory`` or ``--timeout`` is tried again
  when the limit changes, and never blamed for a setting.

Both work on the dictionary of ``ScanConfig.as_args()`` (also stored as ``scans.args``), so the
store's migration computes the same keys for rows written before keys existed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

# ScanConfig.as_args() names, with the value a missing one had (older stores).
VERDICT_SETTINGS: dict[str, Any] = {
    "fps": 1.0,
    "frames": None,
    "detector_model": "auto",
    "min_face_score": 0.5,
    "detect_max_side": 640,
    "decoder": "auto",
    "strategy": "confident",
    "min_support": None,
}
ERROR_SETTINGS: dict[str, Any] = {"timeout_s": 300.0, "worker_memory_mb": None}
EVERY_FRAME_FPS = 1000.0  # a sampling rate this high takes every frame


def _canonical(args: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: args.get(k, default) for k, default in names.items()}
    fps = out.get("fps")
    if args.get("every_frame"):  # ScanConfig.every_frame: the same setting as a rate of EVERY_FRAME_FPS
        out["fps"], out["frames"] = "every", None
    elif out.get("frames") is not None:
        out["fps"] = None  # frames mode: the fps value does not matter
    elif fps is not None and float(fps) >= EVERY_FRAME_FPS:
        out["fps"] = "every"
    for k, v in list(out.items()):
        if isinstance(v, float) and math.isfinite(v) and v == int(v):
            out[k] = int(v)  # 1.0 and 1 are the same setting
    return out


def _digest(d: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def verdict_key(args: Mapping[str, Any]) -> str:
    """Key of the settings that change a video's verdict."""
    return "v1:" + _digest(_canonical(args, VERDICT_SETTINGS))


def error_key(args: Mapping[str, Any]) -> str:
    """Key of the settings that change a verdict or whether a file fails (limits)."""
    return "e1:" + _digest(_canonical(args, {**VERDICT_SETTINGS, **ERROR_SETTINGS}))


def key_for_status(args: Mapping[str, Any], status: str) -> str:
    """The key stored with a video row of ``status``."""
    return error_key(args) if status == "error" else verdict_key(args)
