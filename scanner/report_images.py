"""The report's images: the stored face crops, the same crops with their attention map overlaid as a
heatmap (``DIR/img/*.jpg``), and the heatmap's colour scale."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import cv2
import numpy as np
from acfd.schemas import db as store
from acfd.schemas.db import AttentionMask, StoreError
from sqlalchemy import select
from sqlalchemy.orm import Session

from .report_data import _chunks, _Detail

HEATMAP = cv2.COLORMAP_JET
_IMAGE_NAME = re.compile(r"d\d+_(crop|attention)\.jpg")


def overlay_attention(crop_bgr: np.ndarray, attention: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The crop with ``attention`` (h x w floats in [0, 1]) upsampled to its size and blended in as a heatmap.

    Opacity grows with the attention value (``alpha`` at 1), so what the model ignored stays visible.
    """
    h, w = crop_bgr.shape[:2]
    a = cv2.resize(np.clip(attention.astype(np.float32), 0.0, 1.0), (w, h), interpolation=cv2.INTER_CUBIC)
    a = np.clip(a, 0.0, 1.0)
    heat = cv2.applyColorMap(np.rint(a * 255).astype(np.uint8), HEATMAP).astype(np.float32)
    weight = (alpha * a)[..., None]
    out = crop_bgr.astype(np.float32) * (1.0 - weight) + heat * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _write_images(s: Session, details: list[_Detail], img_dir: Path, alpha: float) -> tuple[int, list[str]]:
    want = {c.detection_id: c for d in details for c in d.crops}
    if img_dir.is_dir():  # a previous report's images (faces) must not linger beside the new one
        for old in img_dir.iterdir():
            if _IMAGE_NAME.fullmatch(old.name):
                old.unlink()
    if not want:
        return 0, []
    img_dir.mkdir(parents=True, exist_ok=True)
    n, problems = 0, []
    for chunk in _chunks(sorted(want), 200):
        for m in s.scalars(select(AttentionMask).where(AttentionMask.detection_id.in_(chunk))):
            c = want[m.detection_id]
            crop = cv2.imdecode(np.frombuffer(m.crop_jpeg or b"", np.uint8), cv2.IMREAD_COLOR)
            if crop is None:
                problems.append(f"detection {m.detection_id}: stored face crop is not a readable JPEG")
                continue
            crop_name = f"d{m.detection_id}_crop.jpg"
            (img_dir / crop_name).write_bytes(m.crop_jpeg)  # as stored: what the model saw
            c.crop_src = f"img/{crop_name}"
            n += 1
            try:
                att = store.decode_mask(m.data, m.h, m.w, m.encoding)
            except StoreError as e:
                problems.append(f"detection {m.detection_id}: {e}")
                continue
            ok, buf = cv2.imencode(".jpg", overlay_attention(crop, att, alpha), [cv2.IMWRITE_JPEG_QUALITY, 92])
            if ok:
                name = f"d{m.detection_id}_attention.jpg"
                (img_dir / name).write_bytes(buf.tobytes())
                c.overlay_src = f"img/{name}"
                n += 1
    for d in details:  # crops whose images failed are not shown
        d.crops = [c for c in d.crops if c.crop_src]
    return n, problems


def _colorbar_data_uri() -> str:
    bar = cv2.applyColorMap(np.tile(np.arange(256, dtype=np.uint8), (10, 1)), HEATMAP)
    ok, buf = cv2.imencode(".png", bar)
    assert ok
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
