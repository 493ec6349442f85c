"""A throwaway local Ray instance for tests and benchmarks: ``ray start --head --block`` on 127.0.0.1 with its
own temp dir and ports, in its own process group, stopped by killing only its processes (never ``ray stop``,
which stops every Ray instance on the machine)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY_BIN = Path(sys.executable).with_name("ray")
ENV = {
    "RAY_AUTH_MODE": "disabled"
}  # this instance only: no token (a token in ~/.ray would otherwise turn it on)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRay:
    """A local Ray head started by ``ray start --block`` in its own process group (``cpus`` CPUs, no GPU);
    ``tmp``: a folder for its temp dir and the start log; ``env``: more environment for its processes (e.g.
    ``RAY_worker_niceness``)."""

    def __init__(self, tmp: Path, cpus: int = 2, object_store_mb: int = 300,
                 env: dict[str, str] | None = None) -> None:
        self.temp = tmp / "ray"
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        args = [str(RAY_BIN), "start", "--head", "--block", "--num-cpus", str(cpus), "--num-gpus", "0",
                "--include-dashboard", "false", "--object-store-memory", str(object_store_mb * 1024 * 1024),
                "--temp-dir", str(self.temp), "--port", str(port), "--node-ip-address", "127.0.0.1",
                "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
        self.log_path = tmp / "ray-start.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **ENV, **(env or {})})

    def wait_started(self, timeout: float = 90.0) -> None:
        """Until `ray start` says the runtime started (connecting before makes ray.init retry for minutes)."""
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_bytes().decode(errors="replace")[-3000:]
                raise RuntimeError(f"ray start failed (exit {self.proc.poll()}):\n{tail}")
            time.sleep(0.2)

    def raylet_pid(self) -> int | None:
        for pid, cmd in _processes():
            if "raylet" in cmd and str(self.temp) in cmd and "--raylet_socket_name" in cmd:
                return pid
        return None

    def actor_pids(self, kind: str, busy: bool = False) -> list[int]:
        """PIDs of this instance's Ray Data actors of ``kind`` (by process title; children of its raylet);
        ``busy``: only those running a task now (Ray titles them ``ray::CLASS.submit`` meanwhile)."""
        raylet = self.raylet_pid()
        title = f"ray::MapWorker({kind})" + (".submit" if busy else "")
        return [pid for pid, cmd in _processes() if cmd.startswith(title) and _ppid(pid) == raylet]

    def stop(self) -> None:
        """Its processes only: the head's process group, then the workers its raylet started (each in a
        session of its own)."""
        raylet = self.raylet_pid()
        workers = [pid for pid, _ in _processes() if raylet is not None and _ppid(pid) == raylet]
        try:
            # at once: a throwaway instance has nothing to save; its GCS and raylet take seconds over SIGTERM
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def _processes() -> list[tuple[int, str]]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.append(
                    (int(p.name), (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                )
            except OSError:
                pass
    return out


def _ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
