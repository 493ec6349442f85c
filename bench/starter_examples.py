"""A model's scores on the real labelled examples of ../shared/data (the starter model's report card).

Videos (labelled_real.mp4, labelled_fake.mp4) go through the real scanner (`acfd-scan --jsonl`, product
defaults): their video score and label. Images (FaceForensics++ example frames, MesoNet face crops) are
scored as the scanner scores a frame: the largest face BlazeFace finds, cropped with the model's margin
and size, through the same backend. A MesoNet crop is a tight face crop: when the detector finds no face
in it, the whole crop is scored and the row says so.

Prints a table and writes bench/results/starter_examples[-NAME].json.

    .venv/bin/python bench/starter_examples.py MODEL.onnx [--name NAME] [--data ../shared/data]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import cv2

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
VIDEOS = {"labelled_real.mp4": "real", "labelled_fake.mp4": "fake"}


def image_label(name: str) -> str:
    """real/fake from the example's file name (FF++ ex_original*, MesoNet real_*; the rest are fakes)."""
    stem = name.lower()
    if "ex_original" in stem or "_real_" in stem:
        return "real"
    return "fake"


def score_videos(model: Path, data: Path) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "v.jsonl"
        paths = [str(data / "videos" / v) for v in VIDEOS]
        cmd = [str(Path(sys.executable).parent / "acfd-scan"), *paths, "--model", str(model),
               "--db", str(Path(tmp) / "s.sqlite"), "--jsonl", str(jsonl), "-q"]  # fmt: skip
        subprocess.run(cmd, check=False, capture_output=True, text=True)
        for line in jsonl.read_text().splitlines():
            d = json.loads(line)
            name = Path(d["path"]).name
            rows.append({"example": name, "truth": VIDEOS[name], "score": d.get("score"),
                         "label": d.get("label") or d.get("status"), "how": "scan, 1 fps"})  # fmt: skip
    return sorted(rows, key=lambda r: r["example"])


def score_images(backend, data: Path) -> list[dict]:  # noqa: ANN001 - an acfd.engine backend
    from acfd.scanner.faces import FaceDetector, crop, crop_box, largest_face

    meta = backend.meta
    rows = []
    with FaceDetector() as det:  # as a scan detects (scanner.config defaults)
        for p in sorted((data / "images").iterdir()):
            if p.suffix.lower() not in (".png", ".jpg") or p.stem.endswith("_mask"):
                continue
            rgb = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            face = largest_face(det.detect(rgb))
            if face is not None:
                x = crop(rgb, crop_box(face, meta.crop_margin), meta.input_size)
                how = "largest face"
            else:
                x = cv2.resize(rgb, (meta.input_size, meta.input_size), interpolation=cv2.INTER_AREA)
                how = "no face found: whole crop"
            s = float(backend.infer(x[None]).score[0])
            rows.append({"example": p.name, "truth": image_label(p.name), "score": s,
                         "label": "fake" if s > meta.threshold else "real", "how": how})  # fmt: skip
    return rows


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default="", help="Suffix of the JSON file (a recipe name).")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_DATA)
def main(model: Path, name: str, data: Path) -> None:
    from acfd.engine import runtime

    rows = score_videos(model, data)
    with runtime.load(model, device="cpu") as b:  # loaded once, for the images
        threshold = b.meta.threshold
        rows += score_images(b, data)
    print(f"model {model} (threshold {threshold:.4g})")
    print(f"{'example':<48} {'truth':<5} {'score':>8} {'label':<8} how")
    for r in rows:
        s = f"{r['score']:.4g}" if isinstance(r["score"], (int, float)) else "-"
        print(f"{r['example']:<48} {r['truth']:<5} {s:>8} {r['label']:<8} {r['how']}")
    out = HERE / "results" / f"starter_examples{'-' + name if name else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": str(model), "threshold": threshold, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
