"""Executors: where and when the stages (:mod:`acfd.scanner.stages`) run for a stream of items.

An executor takes the scan's items in order: candidates to decode, and results already known
(unreadable paths, duplicates, videos unchanged since an earlier scan), which it passes on in their
place. It returns a generator of results (:data:`~acfd.scanner.results.ScanEvent`), every item exactly
once, each decoded video finished (its verdicts aggregated) but not stored: storing, printing and
JSONL are sinks of that stream (:mod:`acfd.scanner.sinks`). :class:`~acfd.scanner.local.LocalExecutor`
runs on this machine; a cluster executor is another subclass over the same stages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .config import ScanError
from .discover import Candidate, Idle
from .results import ScanEvent
from .stages import FramesConfig, VerdictPolicy


@dataclass(frozen=True)
class ExecutorSettings:
    """What every executor needs to run the stages the same way."""

    frames: FramesConfig
    policy: VerdictPolicy
    keep: int  # crops kept per identity (thumbnail + attention)
    batch_size: int
    n_workers: int  # 0: the frames stage in the scanning process itself (no isolation)
    timeout_s: float  # a video whose decoding makes no progress this long becomes an error row
    max_pending: int = 512  # crops waiting for the model before decoding is held back
    memory_limit_mb: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.n_workers < 0 or self.max_pending < 1 or self.keep < 0:
            raise ScanError("batch size and max pending must be >= 1, workers and kept crops >= 0")


class Executor(ABC):
    """Runs the stages over items; ``infer_busy_s`` is the model's busy time once the stream ended."""

    infer_busy_s: float = 0.0

    @abstractmethod
    def run(self, items: Iterable[Candidate | ScanEvent | Idle]) -> Iterator[ScanEvent]:
        """Results for ``items`` (a known result is passed on as it is; :data:`~acfd.scanner.discover.IDLE`:
        nothing ready yet, go on with the work in flight); close the generator to stop early."""
