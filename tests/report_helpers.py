"""A small verdict store with known contents, written through the ORM models, for query and report tests.

Three scans over one archive:

- scan 1 (model A): two fakes (one with an HTML-injection file name), a two-person video, two reals,
  a no-face video, an unreadable file and a skipped duplicate;
- scan 2 (model B): re-scans three files; ``c_real.mp4`` turns from real to fake;
- scan 3 (model A again): re-scans ``c_real.mp4`` (real again) and scans a new file.

So the latest verdict of each path is known, as are the differences between scans 1 and 2 and between
models A and B. Detections carry scores over time, and some carry an attention map and a face crop.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from acfd.schemas import db

from tests.media import astronaut

MODEL_A = "onnx:3f2a9c0e1b7d4a55"
MODEL_B = "onnx:b81c44d09e2f6a17"
THRESHOLD = 9.05
XSS_NAME = "<img src=x onerror=alert(1)>.mp4"
ARCHIVE = "/archive"
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)


@dataclass
class Populated:
    """What was written, for assertions."""

    path: Path
    flagged: list[tuple[str, float]] = field(default_factory=list)  # latest fake verdicts, by score desc
    video_ids: dict[str, int] = field(default_factory=dict)  # path -> latest videos.id
    n_masks: int = 0


def face_crop(size: int = 96) -> np.ndarray:
    """The astronaut's face, size x size RGB: a crop like the scanner stores."""
    return cv2.resize(astronaut()[20:260, 130:370], (size, size), interpolation=cv2.INTER_AREA)


def attention_map(h: int = 19, w: int = 19, cy: float = 0.7, cx: float = 0.5) -> np.ndarray:
    """A smooth blob (values in [0, 1]) centred at (cy, cx) in relative coordinates."""
    y, x = np.mgrid[0:h, 0:w]
    return np.exp(-(((y / (h - 1) - cy) ** 2) + ((x / (w - 1) - cx) ** 2)) / 0.03).astype(np.float32)


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def populate(path: Path) -> Populated:
    """Write the store described in the module docstring to the SQLite file ``path``."""
    engine = db.open_store(path)
    out = Populated(path=Path(path))
    crop = _jpeg(face_crop())
    rng = np.random.default_rng(0)
    try:
        with db.session(engine) as s:
            s.add_all(
                [
                    # first_seen fixed, like every other time here: the report prints it, and two stores
                    # populated a minute apart must give the same page (tests/test_postgres.py)
                    db.Model(model_id=MODEL_A, path="/models/a.onnx", backend="onnxruntime", meta_json="{}",
                             first_seen=T0),
                    db.Model(model_id=MODEL_B, path="/models/b.onnx", backend="onnxruntime", meta_json="{}",
                             first_seen=T0),
                ]
            )
            scans = []
            for i, model in enumerate((MODEL_A, MODEL_B, MODEL_A), start=1):
                sc = db.Scan(
                    id=i, model_id=model, strategy="mean", threshold=THRESHOLD, status=db.SCAN_DONE,
                    started_at=T0 + dt.timedelta(days=i), finished_at=T0 + dt.timedelta(days=i, minutes=5),
                    backend="onnxruntime", device="cpu",
                )  # fmt: skip
                s.add(sc)
                scans.append(sc)
            s.flush()

            def video(scan: db.Scan, name: str, status: str, error: str | None = None, **kw: object) -> db.Video:
                p = f"{ARCHIVE}/{name}"
                v = db.Video(
                    scan_id=scan.id, model_id=scan.model_id, path=p, path_key=os.fsencode(p), size=1000,
                    mtime_ns=1, status=status, error=error, container="mov,mp4,m4a,3gp,3g2,mj2",
                    codec=None if status == db.STATUS_ERROR else "h264",
                    duration_s=None if status == db.STATUS_ERROR else 4.0, fps=25.0, width=640, height=360,
                    scanned_at=scan.started_at, **kw,
                )  # fmt: skip
                s.add(v)
                s.flush()
                out.video_ids[p] = v.id
                return v

            def verdict(v: db.Video, label: str, score: float | None, identity: int | None = None, **kw: object) -> None:
                s.add(
                    db.Verdict(
                        video_id=v.id, scan_id=v.scan_id, model_id=v.model_id, identity=identity, label=label,
                        score=score, threshold=THRESHOLD, strategy="mean", t_first=0.0 if score is not None else None,
                        t_last=3.5 if score is not None else None, **kw,
                    )
                )  # fmt: skip

            def faces(v: db.Video, identity: int, level: float, n: int = 8, masks: int = 0) -> None:
                """n detections over 0..3.5 s around ``level``; the first ``masks`` get an attention map."""
                for k in range(n):
                    d = db.Detection(
                        video_id=v.id, frame_index=k * 12, time_s=k * 0.5, identity=identity,
                        x0=100.0 + 200 * identity, y0=50.0, x1=260.0 + 200 * identity, y1=230.0, det_score=0.95,
                        score=float(max(0.0, level + rng.normal(0, 1.2))),
                    )  # fmt: skip
                    s.add(d)
                    if k < masks:
                        a = attention_map(cy=0.55 + 0.1 * k, cx=0.4 + 0.1 * identity)
                        d.attention = db.AttentionMask(
                            h=19, w=19, encoding=db.MASK_PNG if k % 2 == 0 else db.MASK_U8,
                            data=db.encode_mask(a, db.MASK_PNG if k % 2 == 0 else db.MASK_U8),
                            crop_size=96, crop_jpeg=crop,
                        )  # fmt: skip
                        out.n_masks += 1

            s1, s2, s3 = scans
            v = video(s1, "a_fake.mp4", db.STATUS_OK, n_frames=8, n_faces=8, n_identities=1)
            faces(v, 0, 15.0, masks=2)
            verdict(v, "fake", 15.2, identity=0, n_faces=8)
            verdict(v, "fake", 15.2, n_faces=8)

            v = video(s1, "two_people.mp4", db.STATUS_OK, n_frames=8, n_faces=16, n_identities=2)
            faces(v, 0, 2.0, masks=1)
            faces(v, 1, 12.0, masks=2)
            verdict(v, "real", 2.1, identity=0, n_faces=8)
            verdict(v, "fake", 12.0, identity=1, n_faces=8)
            verdict(v, "fake", 12.0, n_faces=16)

            v = video(s1, XSS_NAME, db.STATUS_OK, n_frames=8, n_faces=8, n_identities=1)
            faces(v, 0, 10.5, masks=1)
            verdict(v, "fake", 10.5, identity=0, n_faces=8)
            verdict(v, "fake", 10.5, n_faces=8)

            for name, score in (("b_real.mp4", 3.3), ("c_real.mp4", 8.0)):
                v = video(s1, name, db.STATUS_OK, n_frames=8, n_faces=8, n_identities=1)
                faces(v, 0, score)
                verdict(v, "real", score, identity=0, n_faces=8)
                verdict(v, "real", score, n_faces=8)

            v = video(s1, "empty_room.mp4", db.STATUS_NO_FACE, n_frames=8)
            verdict(v, "no_face", None)
            video(s1, "broken.mp4", db.STATUS_ERROR, error="cannot decode: Invalid data found when processing input")
            video(s1, "copy_of_b.mp4", db.STATUS_SKIPPED, error=f"same file as {ARCHIVE}/b_real.mp4")

            # Scan 2, model B: c_real turns fake, the others keep their labels.
            for name, label, score in (("a_fake.mp4", "fake", 14.0), ("b_real.mp4", "real", 2.0), ("c_real.mp4", "fake", 9.6)):
                v = video(s2, name, db.STATUS_OK, n_frames=8, n_faces=8, n_identities=1)
                faces(v, 0, score, masks=1 if label == "fake" else 0)
                verdict(v, label, score, identity=0, n_faces=8)
                verdict(v, label, score, n_faces=8)

            # Scan 3, model A again: c_real is real again; a new file.
            for name, score in (("c_real.mp4", 8.1), ("d_new.mp4", 1.0)):
                v = video(s3, name, db.STATUS_OK, n_frames=8, n_faces=8, n_identities=1)
                faces(v, 0, score)
                verdict(v, "real", score, identity=0, n_faces=8)
                verdict(v, "real", score, n_faces=8)
            s.commit()
    finally:
        engine.dispose()  # checkpoints the WAL into the file, so its bytes are the whole store
    out.flagged = [
        (f"{ARCHIVE}/a_fake.mp4", 14.0),
        (f"{ARCHIVE}/two_people.mp4", 12.0),
        (f"{ARCHIVE}/{XSS_NAME}", 10.5),
    ]
    return out
