"""The verdict store's tables, constraints, view and SQLite settings (acfd.schemas.db).

The tables, constraints and view are checked on SQLite and on PostgreSQL (a throwaway cluster:
tests/pg_helpers.py; that case is skipped where PostgreSQL's server is not installed)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from acfd.schemas import db
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    where = tmp_path / "s.sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_db")
    engine = db.open_store(where)
    with db.session(engine) as s, s.begin():
        s.add(db.Model(model_id="m1", path="m.onnx", backend="onnxruntime", meta_json="{}"))
        s.add(db.Scan(model_id="m1", strategy="confident", threshold=9.05))
    yield engine
    engine.dispose()


def _video(s, path: bytes, scan_id: int = 1, status: str = "ok", **kw) -> db.Video:
    v = db.Video(scan_id=scan_id, model_id="m1", path=path.decode(errors="replace"), path_key=path, status=status, **kw)
    s.add(v)
    s.flush()
    return v


def _verdict(s, video: db.Video, score: float | None, label: str, identity: int | None = None) -> db.Verdict:
    vd = db.Verdict(video_id=video.id, scan_id=video.scan_id, model_id="m1", identity=identity, score=score,
                    label=label, threshold=9.05, strategy="confident")
    s.add(vd)
    s.flush()
    return vd


def test_sqlite_settings(tmp_path):
    engine = db.open_store(tmp_path / "s.sqlite")
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
    engine.dispose()
    assert db.database_url(tmp_path / "x.sqlite") == f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert db.database_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_constraints(store):
    with db.session(store) as s:
        v = _video(s, b"/a.mp4")
        with pytest.raises(IntegrityError):  # a no_face verdict must not carry a score
            with s.begin_nested():
                _verdict(s, v, 3.0, "no_face")
        with pytest.raises(IntegrityError):  # a real/fake verdict needs one
            with s.begin_nested():
                _verdict(s, v, None, "fake")
        with pytest.raises(IntegrityError):  # unknown label
            with s.begin_nested():
                _verdict(s, v, 1.0, "maybe")
        with pytest.raises(IntegrityError):  # an error row needs its message
            with s.begin_nested():
                _video(s, b"/b.mp4", status="error")
        with pytest.raises(IntegrityError):  # foreign keys are enforced
            with s.begin_nested():
                _video(s, b"/c.mp4", scan_id=99)
        with pytest.raises(IntegrityError):  # one row per path per scan
            with s.begin_nested():
                _video(s, b"/a.mp4")
        _verdict(s, v, None, "no_face")
        s.commit()


def test_latest_verdicts_view_picks_each_paths_newest_whole_video_verdict(store):
    with db.session(store) as s, s.begin():
        s.add(db.Scan(model_id="m1", strategy="mean", threshold=9.05))
        s.flush()
        a1 = _video(s, b"/x/a.mp4")
        _verdict(s, a1, 3.0, "real")
        _verdict(s, a1, 3.0, "real", identity=0)
        b1 = _video(s, b"/x/b\xff.mp4")  # not UTF-8: the key keeps the bytes
        _verdict(s, b1, None, "no_face")
        a2 = _video(s, b"/x/a.mp4", scan_id=2)
        _verdict(s, a2, 12.5, "fake", identity=1)
        _verdict(s, a2, 12.5, "fake")
    with store.connect() as c:
        got = c.exec_driver_sql("SELECT path_key, label, score, scan_id FROM latest_verdicts ORDER BY path_key").all()
    assert [(bytes(k), lab, sc, sid) for k, lab, sc, sid in got] == [
        (b"/x/a.mp4", "fake", 12.5, 2),
        (b"/x/b\xff.mp4", "no_face", None, 1),
    ]
    with store.connect() as c:
        path = c.exec_driver_sql("SELECT path FROM latest_verdicts WHERE label = 'no_face'").scalar()
    assert path == "/x/b\ufffd.mp4"


def test_cascade_delete_of_a_scan(store):
    with db.session(store) as s, s.begin():
        v = _video(s, b"/a.mp4")
        d = db.Detection(video_id=v.id, frame_index=0, time_s=0.0, identity=0, x0=0, y0=0, x1=1, y1=1,
                         det_score=0.9, score=1.0)
        s.add(d)
        s.flush()
        s.add(db.AttentionMask(detection_id=d.id, h=2, w=2, encoding="u8", data=b"\0\1\2\3", crop_size=8, crop_jpeg=b"j"))
        _verdict(s, v, 1.0, "real")
    with db.session(store) as s, s.begin():
        s.delete(s.get(db.Scan, 1))
    with store.connect() as c:
        for t in ("videos", "detections", "verdicts", "attention_masks"):
            assert c.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar() == 0, t


def test_schema_version_and_newer_database_refused(tmp_path):
    path = tmp_path / "v.sqlite"
    engine = db.open_store(path)
    with engine.connect() as c:
        assert c.execute(select(db.Meta.value).where(db.Meta.key == "schema_version")).scalar() == str(db.DB_SCHEMA_VERSION)
    assert db.init_db(engine) == db.DB_SCHEMA_VERSION  # idempotent
    engine.dispose()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(db.StoreError, match="newer"):
        db.open_store(path)


def test_bad_url_is_a_store_error():
    with pytest.raises(db.StoreError):
        db.make_engine("nosuchdialect://x/y")


@pytest.mark.parametrize("encoding", [db.MASK_PNG, db.MASK_U8])
def test_mask_roundtrip(encoding):
    a = np.random.default_rng(0).random((19, 19)).astype(np.float32)
    data = db.encode_mask(a, encoding)
    back = db.decode_mask(data, 19, 19, encoding)
    assert back.shape == (19, 19)
    assert np.abs(back - a).max() <= 0.5 / 255 + 1e-6
    if encoding == db.MASK_U8:
        assert len(data) == 361
    with pytest.raises(db.StoreError):
        db.decode_mask(data[:-3] if encoding == db.MASK_U8 else b"garbage", 19, 19, encoding)


def test_make_engine_error_hides_the_password():
    from acfd.schemas.db import StoreError, make_engine

    with pytest.raises(StoreError) as ei:
        make_engine("nosuchdialect://alice:s3cret@host/db")
    assert "s3cret" not in str(ei.value) and "alice:***@host" in str(ei.value)
