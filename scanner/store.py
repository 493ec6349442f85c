"""Store: write scans and per-video results to the verdict store (``acfd.schemas.db``), one transaction each.

A video's row, its detections, verdicts and attention masks and the scan's counters are committed
together, so a scan killed at any instant (even SIGKILL) leaves each video entirely stored or not at
all, and the scan row's counts always match its stored videos. Resume keys on (path bytes, size,
mtime, model id), for a URL on its ETag too (:meth:`~acfd.scanner.discover.Candidate.unchanged_since`).

Liveness is a lease: a running scan's row holds ``lease_until`` (UTC), which the scan pushes forward
every third of :data:`LEASE_S` while it runs (:meth:`Store.hold_lease`); a later scan, on any machine,
marks a ``running`` scan whose lease has passed ``interrupted``. A lease works wherever the database
is shared (one SQLite file, or a server that scans on many machines write to), where a process id
means nothing to another machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from acfd.schemas import db
from acfd.schemas.artifact import ArtifactMeta
from acfd.schemas.db import (
    AttentionMask,
    Detection,
    Model,
    Scan,
    Verdict,
    Video,
)
from sqlalchemy import Engine, select, update

from .discover import Candidate
from .results import ScanSummary, VideoResult

# Seconds a running scan's lease lasts; it is renewed every LEASE_S / 3. Long enough that a renewal
# missed on a busy database (SQLite waits up to its busy timeout for the write lock) or a short stall
# does not end it: two renewals may fail in a row before another scan may take the scan for dead.
# Short enough that a killed scan is seen as interrupted about a minute later. The hosts' clocks
# are assumed to agree within a few seconds (NTP): the lease is written by one machine's clock and
# judged by another's.
LEASE_S = 60.0


def _utc(t: dt.datetime) -> dt.datetime:
    """``t`` as an aware UTC time: SQLite gives DateTime(timezone=True) columns back naive (stored as UTC)."""
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


@dataclass
class LeaseHolder:
    """What :meth:`Store.hold_lease` did so far: renewals made and failed, the last failure in one line."""

    scan_id: int
    lease_s: float
    renewed: int = 0
    failed: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class PreviousScan:
    """What the store already holds for a path under this model (for resume)."""

    size: int | None
    mtime_ns: int | None
    status: str
    scan_id: int
    flagged: bool
    settings_key: str | None = None  # acfd.schemas.settings key the row was made with (None: unknown)
    score: float | None = None  # the stored whole-video score
    etag: str | None = None  # a URL's ETag when it was scanned (None for files)


class Store:
    """Writes one scan into the verdict store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register_model(self, model_id: str, path: str, backend: str, meta: ArtifactMeta) -> None:
        """Add the model's row (its metadata and card) unless the store has it already.

        ``model_id`` hashes the artifact's bytes and the card is inside them, so a stored row's card
        never goes stale. An artifact without a card (made before cards) is stored as unvalidated.
        """
        card = meta.card
        values = dict(
            model_id=model_id, path=path, backend=backend, meta_json=meta.to_json(), validation=meta.validation,
            card_summary=None if card is None else card.one_line(),
            card_json=None if card is None else json.dumps(card.to_dict()),
        )
        if self.engine.dialect.name == "postgresql":
            # Two scans of one model starting at once both find no row; the second insert must not fail
            # (on SQLite, BEGIN IMMEDIATE already runs them one after the other).
            from sqlalchemy.dialects.postgresql import insert

            with self.engine.begin() as c:
                c.execute(insert(Model).values(**values).on_conflict_do_nothing(index_elements=[Model.model_id]))
            return
        with db.session(self.engine) as s, s.begin():
            if s.get(Model, model_id) is None:
                s.add(Model(**values))

    def mark_dead_scans(self) -> int:
        """Mark scans found dead ``interrupted``; returns how many.

        Dead: a ``running`` scan (of any host) whose lease has passed; its ``finished_at`` becomes the
        lease's end (it stopped renewing at most a lease before). A ``running`` scan without a lease
        (written before leases, schema version 2 or older) is dead when it ran on this host and its
        process is gone; its ``finished_at`` becomes now.
        """
        from .worker import pid_alive

        now = db.utcnow()
        host = socket.gethostname()
        with db.session(self.engine) as s, s.begin():
            # One conditional UPDATE: a lease renewed between a read and the write is never overruled.
            n = s.execute(
                update(Scan)
                .where(Scan.status == db.SCAN_RUNNING, Scan.lease_until.is_not(None), Scan.lease_until < now)
                .values(status=db.SCAN_INTERRUPTED, finished_at=Scan.lease_until)
                .execution_options(synchronize_session=False)
            ).rowcount
            legacy = s.scalars(select(Scan).where(
                Scan.status == db.SCAN_RUNNING, Scan.lease_until.is_(None), Scan.host == host
            ))
            for scan in legacy:
                if scan.pid != os.getpid() and not pid_alive(scan.pid):
                    scan.status = db.SCAN_INTERRUPTED
                    scan.finished_at = now
                    n += 1
        return n

    def renew_lease(self, scan_id: int, lease_s: float = LEASE_S) -> None:
        """Push the scan's lease to now + ``lease_s``, if the scan is still ``running`` (else nothing)."""
        with self.engine.begin() as c:
            c.execute(
                update(Scan)
                .where(Scan.id == scan_id, Scan.status == db.SCAN_RUNNING)
                .values(lease_until=db.utcnow() + dt.timedelta(seconds=lease_s))
            )

    @contextlib.contextmanager
    def hold_lease(self, scan_id: int, lease_s: float = LEASE_S) -> Iterator[LeaseHolder]:
        """Keep the scan's lease alive while the block runs: a daemon thread renews it every ``lease_s / 3``.

        A renewal that fails (the database locked past its busy timeout, a dropped connection) is
        skipped and tried again at the next tick: it never stops the scan. Renewals stop when the
        block exits (one already under way may still land; it changes nothing once the scan is
        finished).
        """
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s!r}")
        holder = LeaseHolder(scan_id, lease_s)
        stop = threading.Event()

        def renew() -> None:
            try:
                self.renew_lease(scan_id, lease_s)
                holder.renewed += 1
            except Exception as e:  # any failure: skip this renewal, the next tick tries again
                holder.failed += 1
                holder.last_error = (str(e).strip().splitlines() or [type(e).__name__])[0]

        def loop() -> None:
            while not stop.wait(lease_s / 3):
                renew()

        renew()  # covers the time between start_scan and here
        thread = threading.Thread(target=loop, name=f"acfd-lease-{scan_id}", daemon=True)
        thread.start()
        try:
            yield holder
        finally:
            stop.set()
            # Bounded: a renewal stuck on a locked database must not hold up the scan's end.
            thread.join(timeout=min(lease_s, 5.0))

    def start_scan(
        self, model_id: str, strategy: str, threshold: float, backend: str, device: str, args: dict, version: str,
        device_name: str | None = None, lease_s: float = LEASE_S,
    ) -> int:
        """Add the scan's row, ``running``, with a lease of ``lease_s`` seconds from now; returns its id."""
        with db.session(self.engine) as s, s.begin():
            scan = Scan(
                model_id=model_id,
                strategy=strategy,
                threshold=threshold,
                backend=backend,
                device=device,
                device_name=device_name,
                args=json.dumps(args, sort_keys=True, default=str),
                host=socket.gethostname(),
                pid=os.getpid(),
                acfd_version=version,
                status=db.SCAN_RUNNING,
                lease_until=db.utcnow() + dt.timedelta(seconds=lease_s),
            )
            s.add(scan)
            s.flush()
            return scan.id

    def previous(self, model_id: str) -> dict[bytes, PreviousScan]:
        """The newest stored row of every path scanned with ``model_id``."""
        out: dict[bytes, PreviousScan] = {}
        q = (
            select(Video.path_key, Video.size, Video.mtime_ns, Video.status, Video.scan_id, Verdict.label,
                   Video.settings_key, Verdict.score, Video.etag)
            .outerjoin(Verdict, (Verdict.video_id == Video.id) & Verdict.identity.is_(None))
            .where(Video.model_id == model_id)
            .order_by(Video.id)
        )
        with self.engine.connect() as c:
            for key, size, mtime, status, scan_id, label, skey, score, etag in c.execute(q):
                out[bytes(key)] = PreviousScan(size, mtime, status, scan_id, label == db.LABEL_FAKE, skey, score, etag)
        return out

    def set_found(self, scan_id: int, n_found: int) -> None:
        with self.engine.begin() as c:
            c.execute(update(Scan).where(Scan.id == scan_id).values(n_found=n_found))

    def add_skipped(self, scan_id: int, n: int) -> None:
        if n:
            with self.engine.begin() as c:
                c.execute(update(Scan).where(Scan.id == scan_id).values(n_skipped=Scan.n_skipped + n))

    def write_video(
        self, scan_id: int, model_id: str, threshold: float, strategy: str, r: VideoResult, mask_encoding: str = db.MASK_PNG,
        settings_key: str | None = None,
    ) -> int:
        """Store one video's results and bump the scan's counters, in one transaction; returns the row id."""
        c: Candidate = r.candidate
        info = r.info
        with db.session(self.engine) as s, s.begin():
            video = Video(
                scan_id=scan_id,
                model_id=model_id,
                path=c.display,
                path_key=c.key,
                size=c.size,
                mtime_ns=c.mtime_ns,
                etag=c.etag,
                content_hash=r.content_hash,
                status=r.status,
                error=r.error,
                settings_key=settings_key,
                n_frames=r.n_frames,
                n_faces=len(r.faces),
                n_identities=len(r.verdict.identities) if r.verdict else 0,
                t_decode=r.timings.decode,
                t_detect=r.timings.detect,
                t_infer=r.timings.infer,
                t_store=r.timings.store,
            )
            if info is not None:
                video.container = info.container
                video.codec = info.codec
                video.duration_s = info.duration_s
                video.fps = info.fps
                video.n_frames_total = info.n_frames_total
                video.width, video.height, video.rotation = info.width, info.height, info.rotation
                video.decoder = info.decoder
            s.add(video)
            dets = [
                Detection(
                    frame_index=f.frame_index,
                    time_s=f.time_s,
                    identity=f.identity,
                    x0=f.face.x0,
                    y0=f.face.y0,
                    x1=f.face.x1,
                    y1=f.face.y1,
                    det_score=f.face.score,
                    score=float(f.score) if f.score is not None else float("nan"),
                )
                for f in r.faces
            ]
            video.detections = dets
            for sc in r.crops:
                data, h, w = b"", 0, 0
                if sc.attention is not None:
                    h, w = sc.attention.shape
                    data = db.encode_mask(sc.attention, mask_encoding)
                dets[sc.face_index].attention = AttentionMask(
                    h=h, w=w, encoding=mask_encoding, data=data, crop_size=sc.size, crop_jpeg=sc.jpeg
                )
            v = r.verdict
            if v is not None:
                common = dict(scan_id=scan_id, model_id=model_id, threshold=threshold, strategy=strategy)
                video.verdicts = [
                    Verdict(identity=iv.identity, score=iv.score, label=iv.label, n_faces=iv.n_faces,
                            t_first=iv.t_first, t_last=iv.t_last, **common)
                    for iv in v.identities
                ] + [
                    Verdict(identity=None, score=v.score, label=v.label, n_faces=v.n_faces,
                            t_first=v.t_first, t_last=v.t_last, **common)
                ]
            counter = {
                db.STATUS_OK: Scan.n_ok,
                db.STATUS_NO_FACE: Scan.n_no_face,
                db.STATUS_ERROR: Scan.n_error,
                db.STATUS_SKIPPED: Scan.n_skipped,
            }[r.status]
            values = {counter.key: counter + 1, "n_frames": Scan.n_frames + r.n_frames, "n_faces": Scan.n_faces + len(r.faces)}
            if r.flagged:
                values["n_flagged"] = Scan.n_flagged + 1
            if info is not None and info.duration_s and r.status in (db.STATUS_OK, db.STATUS_NO_FACE):
                values["video_seconds"] = Scan.video_seconds + info.duration_s
            s.flush()
            s.execute(update(Scan).where(Scan.id == scan_id).values(**values))
            return video.id

    def finish_scan(self, scan_id: int, status: str, wall_s: float) -> ScanSummary:
        """Close the scan row and read its final counts back."""
        with db.session(self.engine) as s, s.begin():
            scan = s.get(Scan, scan_id)
            assert scan is not None
            scan.status = status
            scan.finished_at = db.utcnow()
            scan.wall_s = wall_s
            s.flush()
            return ScanSummary(
                scan_id=scan_id,
                n_found=scan.n_found,
                n_ok=scan.n_ok,
                n_no_face=scan.n_no_face,
                n_error=scan.n_error,
                n_skipped=scan.n_skipped,
                n_flagged=scan.n_flagged,
                n_frames=scan.n_frames,
                n_faces=scan.n_faces,
                video_seconds=scan.video_seconds,
                wall_s=wall_s,
            )
