"""Do two verdict stores hold the same scan? Compares, per video path, everything a scan decides.

Made to prove that a change of the scanner's structure changed no result: scan the same folder with
the same model and settings before and after, then

    .venv/bin/python bench/store_equivalence.py BEFORE.sqlite AFTER.sqlite [--tol 1e-6]

Compared per path (each store's newest row of it): status, error, frame/face/identity counts, the
video's facts (container, codec, duration, size, decoder) and content hash; every detection (frame,
time, identity, box, detector score; model score within --tol); every verdict (identity, label,
face count, first/last time; score within --tol); which detections kept a crop, and the crop's JPEG
and attention mask bytes. Timings, ids and dates are not compared. Prints a table and writes
bench/results/store_equivalence.json; exit 1 when anything differs.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent

VIDEO_COLS = ("status", "error", "n_frames", "n_faces", "n_identities", "container", "codec", "duration_s", "fps",
              "n_frames_total", "width", "height", "rotation", "decoder", "content_hash", "size")
DET_COLS = ("frame_index", "time_s", "identity", "x0", "y0", "x1", "y1", "det_score", "score")
VERDICT_COLS = ("identity", "label", "n_faces", "t_first", "t_last", "score")
MASK_COLS = ("h", "w", "encoding", "crop_size", "data", "crop_jpeg")


def _latest(c: sqlite3.Connection) -> dict[str, int]:
    """Each path's newest video row id."""
    return {p: i for p, i in c.execute("SELECT path, MAX(id) FROM videos GROUP BY path")}


def load(db: Path) -> dict[str, dict]:
    """Everything compared, per path."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, dict] = {}
    for path, vid in _latest(c).items():
        v = c.execute(f"SELECT {', '.join(VIDEO_COLS)} FROM videos WHERE id = ?", (vid,)).fetchone()
        dets = c.execute(
            f"SELECT d.{', d.'.join(DET_COLS)}, {', '.join('m.' + m for m in MASK_COLS)} FROM detections d "
            "LEFT JOIN attention_masks m ON m.detection_id = d.id WHERE d.video_id = ? "
            "ORDER BY d.frame_index, d.x0, d.y0", (vid,)).fetchall()
        verdicts = c.execute(
            f"SELECT {', '.join(VERDICT_COLS)} FROM verdicts WHERE video_id = ? ORDER BY identity IS NULL, identity",
            (vid,)).fetchall()
        out[path] = {"video": dict(zip(VIDEO_COLS, v, strict=True)), "detections": dets, "verdicts": verdicts}
    c.close()
    return out


def _close(a: object, b: object, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol
    return a == b


def compare(before: dict[str, dict], after: dict[str, dict], tol: float) -> tuple[list[dict], float]:
    """One row per path: what differs (empty: the same); and the largest score difference seen."""
    rows = []
    worst = 0.0
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        diffs: list[str] = []
        if a is None or b is None:
            rows.append({"path": path, "detections": 0, "diffs": ["only in " + ("after" if a is None else "before")]})
            continue
        for k in VIDEO_COLS:
            if not _close(a["video"][k], b["video"][k], 0.0):
                diffs.append(f"video.{k}: {a['video'][k]!r} != {b['video'][k]!r}")
        if len(a["detections"]) != len(b["detections"]):
            diffs.append(f"detections: {len(a['detections'])} != {len(b['detections'])}")
        else:
            score_i = DET_COLS.index("score")
            for n, (da, db_) in enumerate(zip(a["detections"], b["detections"], strict=True)):
                worst = max(worst, abs(da[score_i] - db_[score_i]))
                for i, name in enumerate(DET_COLS + MASK_COLS):
                    t = tol if name == "score" else 0.0
                    if not _close(da[i], db_[i], t):
                        diffs.append(f"detection {n}.{name} differs")
        if len(a["verdicts"]) != len(b["verdicts"]):
            diffs.append(f"verdicts: {len(a['verdicts'])} != {len(b['verdicts'])}")
        else:
            for va, vb in zip(a["verdicts"], b["verdicts"], strict=True):
                if va[-1] is not None and vb[-1] is not None:  # a no-face video's verdict has no score
                    worst = max(worst, abs(va[-1] - vb[-1]))
                for i, name in enumerate(VERDICT_COLS):
                    if not _close(va[i], vb[i], tol if name == "score" else 0.0):
                        diffs.append(f"verdict {va[0]}.{name}: {va[i]!r} != {vb[i]!r}")
        rows.append({"path": path, "detections": len(a["detections"]), "diffs": diffs})
    return rows, worst


@click.command()
@click.argument("before", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("after", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tol", type=float, default=1e-6, show_default=True, help="Largest score difference allowed.")
@click.option("--out", type=click.Path(path_type=Path), default=HERE / "results" / "store_equivalence.json",
              show_default=True)
def main(before: Path, after: Path, tol: float, out: Path) -> None:
    rows, worst = compare(load(before), load(after), tol)
    print(f"{'video':<40} {'detections':>10}  result")
    for r in rows:
        print(f"{Path(r['path']).name[:40]:<40} {r['detections']:>10}  {'same' if not r['diffs'] else r['diffs'][0]}")
        for d in r["diffs"][1:6]:
            print(f"{'':<52}{d}")
    same = all(not r["diffs"] for r in rows)
    print(f"{len(rows)} videos, {sum(r['detections'] for r in rows)} detections: "
          f"{'the same' if same else 'DIFFERENT'} (largest score difference {worst:.3g}, tolerance {tol:g})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"before": str(before), "after": str(after), "tol": tol, "same": same,
                               "max_score_diff": worst, "rows": rows}, indent=1))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
