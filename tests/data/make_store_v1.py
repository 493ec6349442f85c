"""Write ``store_v1.sql`` and ``store_v1/``: a verdict store of schema version 1, made by the release
before the model card (commit 13e010e), for ``tests/test_migrations.py``. See ``README.md`` here.

Run with the OLD acfd importable as ``acfd`` and the old tree's ``tests`` package on the path::

    git worktree add /tmp/acfd-v1 13e010e
    mkdir -p /tmp/v1pkg/acfd
    for d in schemas scanner engine train; do ln -s /tmp/acfd-v1/$d /tmp/v1pkg/acfd/$d; done
    PYTHONPATH=/tmp/v1pkg:/tmp/acfd-v1 .venv/bin/python tests/data/make_store_v1.py /tmp/acfd-store-v1
    cp /tmp/acfd-store-v1/store_v1.sql tests/data/ && cp -r /tmp/acfd-store-v1/store_v1 tests/data/
    git worktree remove --force /tmp/acfd-v1
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path


def main(out: Path) -> None:
    import acfd
    from acfd.scanner.pipeline import ScanConfig, Scanner
    from acfd.schemas import db

    from tests import scan_helpers as H

    if db.DB_SCHEMA_VERSION != 1:
        sys.exit(f"this must run with the acfd of schema version 1, not {db.DB_SCHEMA_VERSION} ({acfd.__path__})")
    files = out / "store_v1"
    videos = files / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    model = H.make_model(files / "model.onnx", H.FAKE_BIAS)  # every face scores about 15: fake
    H.face_video(videos / "face.mp4", n=3, fps=10)
    H.no_face_video(videos / "no_face.mp4", n=3, fps=10)
    (videos / "broken.mp4").write_bytes(b"this is not a video\n" * 20)
    dbp = out / "store.sqlite"
    cfg = ScanConfig(paths=(str(videos),), model=str(model), db=str(dbp), fps=None, frames=2, store_crops=1, workers=1)
    scanner = Scanner(cfg)
    print(scanner.run())
    scanner.engine.dispose()  # checkpoints the WAL into the file
    con = sqlite3.connect(dbp)
    (out / "store_v1.sql").write_text("\n".join(con.iterdump()) + "\n", encoding="utf-8")
    con.close()


if __name__ == "__main__":  # the scan's worker processes are spawned: they import this module
    main(Path(sys.argv[1]))
