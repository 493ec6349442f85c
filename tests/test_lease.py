"""A running scan's lease (``scans.lease_until``): set at start, renewed while held, and a scan whose
lease has passed is found dead by the next one, on any host. Rows without a lease (made before schema
version 3) are judged the old way: this host, process gone."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from acfd.scanner.store import LEASE_S, Store
from acfd.schemas import db
from sqlalchemy import update

HOST = socket.gethostname()


def _store(path, **kw) -> Store:
    engine = db.open_store(path, **kw)
    with db.session(engine) as s, s.begin():
        if s.get(db.Model, "m1") is None:
            s.add(db.Model(model_id="m1", path="m.onnx", backend="onnxruntime", meta_json="{}"))
    return Store(engine)


@pytest.fixture
def store(tmp_path):
    st = _store(tmp_path / "s.sqlite")
    yield st
    st.engine.dispose()


def _start(st: Store, **kw) -> int:
    return st.start_scan("m1", "confident", 9.05, "onnxruntime", "cpu", {"paths": ["/v"]}, "0.1.0", **kw)


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    return None if t is None else t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t


def _row(st: Store, scan_id: int) -> tuple[str, dt.datetime | None, dt.datetime | None]:
    """(status, lease_until, finished_at) of a scan, times as aware UTC."""
    with db.session(st.engine) as s:
        scan = s.get(db.Scan, scan_id)
        return scan.status, _aware(scan.lease_until), _aware(scan.finished_at)


def _lease(st: Store, scan_id: int) -> dt.datetime:
    return _row(st, scan_id)[1]


def _set(st: Store, scan_id: int, **values) -> None:
    with st.engine.begin() as c:
        c.execute(update(db.Scan).where(db.Scan.id == scan_id).values(**values))


def _dead_pid() -> int:
    """The id of a process that has just exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_start_scan_takes_a_lease_of_lease_s(store, tmp_path):
    assert LEASE_S == 60.0
    before = db.utcnow()
    sid = _start(store)
    after = db.utcnow()
    status, lease, finished = _row(store, sid)
    assert status == "running" and finished is None
    assert before + dt.timedelta(seconds=60) <= lease <= after + dt.timedelta(seconds=60)
    # Stored as UTC (SQLite keeps no zone): the raw text is the UTC wall time, whatever the local zone.
    con = sqlite3.connect(tmp_path / "s.sqlite")
    (raw,) = con.execute("SELECT lease_until FROM scans WHERE id = ?", (sid,)).fetchone()
    con.close()
    assert raw == lease.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_renew_moves_the_lease_of_a_running_scan_only(store):
    sid = _start(store)
    past = db.utcnow() - dt.timedelta(hours=1)
    _set(store, sid, lease_until=past)
    t0 = db.utcnow()
    store.renew_lease(sid, lease_s=120)
    lease = _lease(store, sid)
    assert t0 + dt.timedelta(seconds=120) <= lease <= db.utcnow() + dt.timedelta(seconds=120)
    store.renew_lease(sid)  # the default: LEASE_S
    assert _lease(store, sid) - db.utcnow() <= dt.timedelta(seconds=60)
    # A finished scan keeps its last lease: renewing it does nothing.
    store.finish_scan(sid, db.SCAN_DONE, 1.0)
    last = _lease(store, sid)
    store.renew_lease(sid, lease_s=3600)
    assert _row(store, sid)[:2] == ("done", last)
    store.renew_lease(999)  # no such scan: nothing, no error


def test_mark_dead_scans_by_lease_on_any_host_and_by_pid_for_old_rows(store):
    now = db.utcnow()
    dead_pid = _dead_pid()
    expired = now - dt.timedelta(seconds=5)
    future = now + dt.timedelta(seconds=50)
    rows = {
        # name: (host, pid, lease_until, status)
        "expired_elsewhere": ("other-host", 4242, expired, "running"),
        "expired_here_alive": (HOST, os.getpid(), expired, "running"),  # the pid is not asked
        "held_elsewhere": ("other-host", 4242, future, "running"),
        "held_here_dead_pid": (HOST, dead_pid, future, "running"),  # a live lease wins over the pid
        "old_here_dead": (HOST, dead_pid, None, "running"),
        "old_here_alive": (HOST, os.getppid(), None, "running"),
        "old_elsewhere": ("other-host", dead_pid, None, "running"),
        "expired_but_done": ("other-host", 4242, expired, "done"),
    }
    ids = {}
    for name, (host, pid, lease, status) in rows.items():
        ids[name] = _start(store)
        _set(store, ids[name], host=host, pid=pid, lease_until=lease, status=status)
    assert store.mark_dead_scans() == 3
    got = {name: _row(store, sid) for name, sid in ids.items()}
    assert {n: g[0] for n, g in got.items()} == {
        "expired_elsewhere": "interrupted",
        "expired_here_alive": "interrupted",
        "held_elsewhere": "running",
        "held_here_dead_pid": "running",
        "old_here_dead": "interrupted",
        "old_here_alive": "running",
        "old_elsewhere": "running",
        "expired_but_done": "done",
    }
    # Found by its lease: finished when the lease ran out; an old row: when found.
    assert got["expired_elsewhere"][2] == got["expired_elsewhere"][1] == expired
    assert got["old_here_dead"][1] is None and now <= got["old_here_dead"][2] <= db.utcnow()
    assert got["held_elsewhere"][1:] == (future, None)
    assert got["expired_but_done"][2] is None
    assert store.mark_dead_scans() == 0  # nothing left to find


def test_hold_lease_renews_while_held_and_stops_after(store):
    sid = _start(store)
    with store.hold_lease(sid, lease_s=0.3) as holder:
        first = _lease(store, sid)
        assert first - db.utcnow() <= dt.timedelta(seconds=0.3)  # renewed on entry: 0.3 s, not 60 s
        time.sleep(0.5)
        later = _lease(store, sid)
        assert later - first >= dt.timedelta(seconds=0.2)  # about 0.5 s, ticks every 0.1 s
        assert holder.renewed >= 3 and holder.failed == 0 and holder.last_error is None
        assert any(t.name == f"acfd-lease-{sid}" and t.daemon for t in threading.enumerate())
    assert not any(t.name == f"acfd-lease-{sid}" for t in threading.enumerate())
    stopped = _lease(store, sid)
    n = holder.renewed
    time.sleep(0.4)
    assert _lease(store, sid) == stopped and holder.renewed == n  # no renewal after the block
    # Not renewed any more, the lease runs out: a later scan (another store on the file) finds it dead.
    other = Store(db.make_engine(store.engine.url.database))
    try:
        assert other.mark_dead_scans() == 1
    finally:
        other.engine.dispose()
    assert _row(store, sid) == ("interrupted", stopped, stopped)
    with pytest.raises(ValueError, match="positive"):
        with store.hold_lease(sid, lease_s=0):
            pass


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions that escaped any thread (threading.excepthook), collected instead of printed."""
    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def _until(cond, timeout_s: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_renewal_on_a_locked_database_is_skipped_not_raised(tmp_path, thread_errors):
    path = tmp_path / "locked.sqlite"
    st = _store(path, busy_timeout_ms=30)  # give up on the lock quickly
    try:
        sid = _start(st)
        locker = sqlite3.connect(path, isolation_level=None, timeout=5)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            with st.hold_lease(sid, lease_s=0.3) as holder:
                # ticks every 0.1 s; waited for, not slept for: a loaded machine runs fewer ticks per second
                assert _until(lambda: holder.failed >= 2), holder
                assert holder.renewed == 0
                assert "locked" in holder.last_error
                locker.execute("COMMIT")  # the lock goes away: the next tick renews
                t_free = db.utcnow()
                assert _until(lambda: holder.renewed >= 1), holder
                assert _lease(st, sid) > t_free + dt.timedelta(seconds=0.25)
        finally:
            locker.close()
        assert _row(st, sid)[0] == "running"
    finally:
        st.engine.dispose()
    assert thread_errors == []


def test_any_renewal_error_is_skipped_and_the_next_tick_renews(store, monkeypatch, thread_errors):
    sid = _start(store)
    real = store.renew_lease
    calls = []

    def flaky(scan_id, lease_s=LEASE_S):
        calls.append(scan_id)
        if len(calls) <= 2:
            raise RuntimeError("connection reset\nsecond line")
        real(scan_id, lease_s)

    monkeypatch.setattr(store, "renew_lease", flaky)
    _set(store, sid, lease_until=db.utcnow() - dt.timedelta(hours=1))
    t0 = db.utcnow()
    with store.hold_lease(sid, lease_s=0.3) as holder:
        time.sleep(0.45)
    assert holder.failed == 2 and holder.last_error == "connection reset"
    assert holder.renewed >= 1 and len(calls) == holder.failed + holder.renewed
    assert _lease(store, sid) >= t0 + dt.timedelta(seconds=0.3)  # renewed after the failures
    assert thread_errors == []
