"""Fixtures for the scanner tests: a tiny real ONNX model, fault files, and fault-injecting workers.

The model is exported with the engine's own ``export_onnx`` and loaded with ``acfd.engine.runtime``,
so the scanner tests run the real inference path. Its score is ``|gain * mean(normalised crop) +
bias|`` (the norm of a 2-d "embedding"), so a test picks a model that calls faces fake (bias above
the threshold 9.05) or real.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.media import moving_face_frames, no_face_image, write_video

MODEL_SIZE = 64
ATTENTION = 8


def make_model(out: Path, bias: float, gain: float = 1.0) -> Path:
    """A tiny LQ-branch-shaped network (float NCHW -> (embedding [N,2], attention [N,1,8,8])) as ONNX."""
    import torch
    from acfd.engine.export import export_onnx
    from acfd.schemas.artifact import ArtifactMeta
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(ATTENTION)
            self.register_buffer("gain", torch.tensor(float(gain)))
            self.register_buffer("bias", torch.tensor(float(bias)))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = x.mean(dim=(1, 2, 3))
            emb = torch.stack([self.gain * m + self.bias, torch.zeros_like(m)], dim=1)
            att = torch.sigmoid(self.pool(x.mean(dim=1, keepdim=True)))
            return emb, att

    meta = ArtifactMeta(input_size=MODEL_SIZE, attention_size=ATTENTION, preset="test-tiny")
    return export_onnx(Tiny().eval(), meta, Path(out))


FAKE_BIAS = 15.0  # every face scores about 15 > 9.05: fake
REAL_BIAS = 1.0  # every face scores about 1: real
def make_models(d: Path) -> dict[str, Path]:
    """The two test models in ``d`` (the session fixture ``models`` in conftest.py makes them once)."""
    return {"fake": make_model(d / "fake.onnx", FAKE_BIAS), "real": make_model(d / "real.onnx", REAL_BIAS)}


def cli(*args: object) -> list[str]:
    """``acfd-scan ARGS`` as a subprocess command line, run by this interpreter."""
    return [sys.executable, "-m", "acfd.scanner", *map(str, args)]


def expected_score(crop: np.ndarray, bias: float, gain: float = 1.0) -> float:
    """What :func:`make_model`'s network gives for one uint8 crop (mean/std 0.5)."""
    x = (crop.astype(np.float64) / 255.0 - 0.5) / 0.5
    return abs(gain * x.mean() + bias)


# --- videos -------------------------------------------------------------------------------------------

def face_video(path: Path, n: int = 10, fps: int = 10, size: tuple[int, int] = (240, 320)) -> Path:
    return write_video(path, moving_face_frames(n, size), fps=fps)


def no_face_video(path: Path, n: int = 6, fps: int = 10) -> Path:
    img = np.ascontiguousarray(no_face_image()[:240, :320])
    return write_video(path, [img] * n, fps=fps)


def two_face_video(path: Path, n: int = 6, fps: int = 5) -> Path:
    """Two people side by side (the astronaut twice), drifting a little."""
    frames = []
    for f in moving_face_frames(n, (240, 240)):
        frames.append(np.concatenate([f, f[:, ::-1]], axis=1))
    return write_video(path, frames, fps=fps)


def rotated_face_video(path: Path, n: int = 4, fps: int = 5) -> Path:
    """A phone-style file: pixels stored on their side (rotated 90 clockwise), display matrix says +90
    (counter-clockwise) to show them upright."""
    frames = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in moving_face_frames(n, (240, 320))]
    return _encode(path, frames, "libx264", fps, rotation=90)


def _encode(path: Path, frames: list[np.ndarray], codec: str, fps: int, options: dict[str, str] | None = None,
            rotation: int | None = None) -> Path:
    """RGB frames to ``path`` with ``codec`` (yuv420p) at ``fps``, its ``options``, a display ``rotation``."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        if options:
            s.options = options
        if rotation is not None:
            s.set_display_rotation(rotation)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def vfr_video(path: Path, times: list[float], size: tuple[int, int] = (240, 320)) -> Path:
    """Variable frame rate: one frame at each of ``times`` (seconds), each frame's brightness = its index."""
    frames = moving_face_frames(len(times), size)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=1000)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for t, f in zip(times, frames, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = int(round(t * 1000))
            vf.time_base = Fraction(1, 1000)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def avi_with_b_frames(path: Path, n: int = 30, fps: int = 10) -> Path:
    """MPEG-4 part 2 with B-frames in AVI (old DivX/Xvid archives): many packets carry no time."""
    return _encode(path, moving_face_frames(n, (240, 320)), "mpeg4", fps, {"bf": "2", "g": "12"})


def audio_only(path: Path, seconds: float = 0.5) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=44100)
        s.layout = "mono"
        n = int(44100 * seconds)
        t = np.arange(n) / 44100
        pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        frame.sample_rate = 44100
        frame.pts = 0
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def random_bytes(path: Path, n: int = 4096, seed: int = 1) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def four_k(path: Path) -> Path:
    """A 3840x2160 clip of 2 frames with a face."""
    return write_video(path, moving_face_frames(2, (2160, 3840)), fps=2)


# --- fault-injecting worker (spawned processes import this module) -----------------------------------

def faulty_worker_main(cfg, tasks, conn):  # noqa: ANN001, ANN201
    """``worker_main`` whose per-video step crashes on files named crash*, hangs on hang*, and
    allocates without end on oom* (until the worker's memory limit stops it), before decoding."""
    from acfd.scanner import worker

    real = worker._process_video

    def process(cfg, detector, vid, path, conn):  # noqa: ANN001, ANN202
        name = os.path.basename(path)
        if name.startswith("crash"):
            os.abort()  # like a native segfault/abort inside a decoder
        if name.startswith("hang"):
            time.sleep(3600)
        if name.startswith("oom"):
            hog = []
            while True:
                hog.append(np.empty(256 << 20, np.uint8))  # address space, as a huge frame buffer
        return real(cfg, detector, vid, path, conn)

    worker._process_video = process
    worker.worker_main(cfg, tasks, conn)


# --- reading the store ----------------------------------------------------------------------------------

def rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


def by_name(db: Path, scan_id: int | None = None) -> dict[str, tuple]:
    """{file name: (status, error, n_faces, label of the whole-video verdict, score)} of the store."""
    q = (
        "SELECT v.path, v.status, v.error, v.n_faces, vd.label, vd.score FROM videos v "
        "LEFT JOIN verdicts vd ON vd.video_id = v.id AND vd.identity IS NULL"
    )
    if scan_id is not None:
        q += f" WHERE v.scan_id = {int(scan_id)}"
    return {os.path.basename(r[0]): r[1:] for r in rows(db, q)}
