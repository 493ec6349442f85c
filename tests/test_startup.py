"""A scan's start-up: what each process imports, the CLI's lazily loaded commands, workers started before
the model is known and configured after, the time line for benchmarks."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time

import pytest

# What a scan must not import before its workers start (the CLI, ScanConfig), and what a decode worker
# must never import.
STORE = ("sqlalchemy", "acfd.schemas.db")
NOT_IN_WORKER = (*STORE, "onnxruntime", "torch", "click", "acfd.scanner.cli", "acfd.scanner.stages",
                 "acfd.scanner.pipeline", "acfd.engine")


def _imported_by(code: str, names: tuple[str, ...]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\n"
                          f"print(json.dumps([m for m in {list(names)!r} if m in sys.modules]))"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_cli_and_scan_config_import_no_store_watcher_or_runtime():
    heavy = (*STORE, "acfd.scanner.watch", "acfd.scanner.report", "onnxruntime", "torch", "mediapipe")
    assert _imported_by("import acfd.scanner.cli", heavy) == []
    assert _imported_by("from acfd.scanner.pipeline import ScanConfig; ScanConfig(paths=('x.mp4',))", heavy) == []


def test_lazy_commands_name_every_command_of_their_modules():
    import importlib

    from acfd.scanner.cli import LAZY_COMMANDS, main

    modules = {m: importlib.import_module(f"acfd.scanner.{m}") for m in set(LAZY_COMMANDS.values())}
    assert LAZY_COMMANDS == {c.name: m for m, mod in modules.items() for c in mod.COMMANDS}
    ctx = main.make_context("acfd-scan", ["--help"], resilient_parsing=True)
    assert main.list_commands(ctx) == sorted({"scan", *LAZY_COMMANDS})
    assert main.get_command(ctx, "watch").name == "watch"


def _report_modules(cfg, tasks, conn) -> None:  # noqa: ANN001 - a worker target (runs in the child)
    """A worker's start, then the names of NOT_IN_WORKER it has imported."""
    from acfd.scanner import worker

    worker._detector(cfg).close()
    worker._warm_up(cfg)
    conn.send([m for m in NOT_IN_WORKER if m in sys.modules])


def test_a_decode_worker_imports_neither_the_cli_nor_the_store_nor_the_model_runtime():
    from acfd.scanner.decode import Sampling
    from acfd.scanner.frames import FramesConfig
    from acfd.scanner.worker import WorkerConfig, _Spawned

    p = _Spawned(_report_modules, WorkerConfig(FramesConfig(Sampling(), 64, 1.3)))
    try:
        assert p.conn.poll(60), "the worker did not answer"
        assert p.conn.recv() == []
        p.join(10)
        assert p.exitcode == 0
    finally:
        p.kill()


def _report_decord(cfg, tasks, conn) -> None:  # noqa: ANN001 - a worker target (runs in the child)
    from acfd.scanner import worker

    worker._warm_up(cfg)
    conn.send("decord" in sys.modules)


@pytest.mark.parametrize(("every", "decoder", "loads"), [(False, "auto", False), (True, "auto", True),
                                                        (False, "decord", True), (True, "pyav", False)])
def test_a_worker_loads_decord_at_its_start_only_when_its_videos_will_need_it(every, decoder, loads):
    # --decoder auto samples with PyAV on a CPU: decord's import (0.4 s of CPU) is not paid at every start
    from acfd.scanner.decode import EVERY_FRAME, Sampling
    from acfd.scanner.frames import FramesConfig
    from acfd.scanner.worker import WorkerConfig, _Spawned

    sampling = EVERY_FRAME if every else Sampling()
    p = _Spawned(_report_decord, WorkerConfig(FramesConfig(sampling, 64, 1.3, decoder=decoder)))
    try:
        assert p.conn.poll(60), "the worker did not answer"
        assert p.conn.recv() is loads
        p.join(10)
        assert p.exitcode == 0
    finally:
        p.kill()


def test_configure_gives_the_workers_the_settings_of_the_next_videos(monkeypatch):
    from acfd.scanner import worker
    from acfd.scanner.decode import Sampling
    from acfd.scanner.frames import FramesConfig

    seen = []
    monkeypatch.setattr(worker, "_process_video", lambda cfg, det, vid, target, conn: seen.append((vid, cfg.frames)))
    tasks_r, tasks_w = mp.Pipe(duplex=False)
    _, out_w = mp.Pipe(duplex=False)
    first, second = FramesConfig(Sampling(), 299, 1.3), FramesConfig(Sampling(), 64, 1.5)
    tasks_w.send((1, "a.mp4"))
    tasks_w.send(second)  # what DecodePool.configure sends
    tasks_w.send((2, "b.mp4"))
    tasks_w.send(None)
    worker._serve(worker.WorkerConfig(first), None, tasks_r, out_w)
    assert seen == [(1, first), (2, second)]


def test_configure_refuses_other_detector_settings_and_close_stops_a_starting_worker():
    from acfd.scanner.decode import Sampling
    from acfd.scanner.frames import FramesConfig
    from acfd.scanner.worker import DecodePool, WorkerConfig, WorkerError

    pool = DecodePool(WorkerConfig(FramesConfig(Sampling(), 299, 1.3)), 1)
    try:
        pool.configure(FramesConfig(Sampling(), 64, 1.3))  # the crop: fine
        assert pool.cfg.frames.crop_size == 64
        with pytest.raises(WorkerError, match="detector's settings"):
            pool.configure(FramesConfig(Sampling(), 64, 1.3, min_face_score=0.9))
        proc = pool._workers[0].proc
    finally:
        t0 = time.monotonic()
        pool.close()
    assert not proc.is_alive() and time.monotonic() - t0 < 2  # not ready yet: killed, not waited for


def test_the_time_line_is_written_only_when_asked(tmp_path):
    path = tmp_path / "timeline"
    code = ("import time; from acfd.scanner import timeline as t; t.mark('a'); t.mark('a'); t.mark('b', once=False); "
            "time.sleep(0.01); t.mark('b', once=False)")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], env={"ACFD_TIMELINE": str(path), "PATH": ""}, check=True)
    from acfd.scanner.timeline import read

    ev = read(str(path), t0)
    assert set(ev) == {"a", "b"} and ev["a"][0] == ev["a"][1] and ev["b"][1] > ev["b"][0] >= ev["a"][0] > 0
    assert len(path.read_text().splitlines()) == 3  # "a" once
    subprocess.run([sys.executable, "-c", code.replace("time.sleep(0.01); ", "")], env={"PATH": ""}, check=True)
    assert len(path.read_text().splitlines()) == 3  # unset: nothing written
