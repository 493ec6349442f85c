"""Write ``store_v2.sql``: a verdict store of schema version 2, made by the release before the scan
lease (commit 6c928ac), for ``tests/test_migrations.py``. See ``README.md`` here.

It scans copies of the files of ``store_v1/`` (kept byte for byte, so the model id, sizes and content
hashes are those of the v1 dump too). Run with the OLD acfd importable as ``acfd`` and the old tree's
``tests`` package on the path::

    mkdir -p /tmp/acfd-v2 /tmp/v2pkg/acfd && git archive 6c928ac | tar -x -C /tmp/acfd-v2
    for d in schemas scanner engine train; do ln -s /tmp/acfd-v2/$d /tmp/v2pkg/acfd/$d; done
    PYTHONPATH=/tmp/v2pkg:/tmp/acfd-v2 .venv/bin/python tests/data/make_store_v2.py /tmp/acfd-store-v2
    cp /tmp/acfd-store-v2/store_v2.sql tests/data/
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

FILES = Path(__file__).resolve().parent / "store_v1"


def main(out: Path) -> None:
    import acfd
    from acfd.scanner.pipeline import ScanConfig, Scanner
    from acfd.schemas import db

    if db.DB_SCHEMA_VERSION != 2:
        sys.exit(f"this must run with the acfd of schema version 2, not {db.DB_SCHEMA_VERSION} ({acfd.__path__})")
    out.mkdir(parents=True, exist_ok=True)
    videos, model = out / "videos", out / "model.onnx"
    shutil.copytree(FILES / "videos", videos)  # copy2: the stored mtimes are the kept files' own
    shutil.copy2(FILES / "model.onnx", model)
    dbp = out / "store.sqlite"
    cfg = ScanConfig(paths=(str(videos),), model=str(model), db=str(dbp), fps=None, frames=2, store_crops=1, workers=1)
    scanner = Scanner(cfg)
    print(scanner.run())
    scanner.engine.dispose()  # checkpoints the WAL into the file
    con = sqlite3.connect(dbp)
    (out / "store_v2.sql").write_text("\n".join(con.iterdump()) + "\n", encoding="utf-8")
    con.close()


if __name__ == "__main__":  # the scan's worker processes are spawned: they import this module
    main(Path(sys.argv[1]))
