"""Decode: open a video, read its facts, and stream a sample of its frames as upright RGB arrays.

Frames are sampled by time: ``Sampling(fps=1)`` takes the first frame at or after every 1/fps
seconds of the stream's own clock (so variable frame rate works), ``Sampling(frames=N)`` takes the
frames nearest N instants spread evenly over the duration. Frames are yielded one at a time (never
the whole video in memory).

Decoders (``decoder="auto"``): decord (``decord2`` on PyPI: CPU only; a CUDA build of decord is used with
``gpu=True`` when present) on the GPU and for every frame; on a CPU, a sample of a local file's frames
goes through PyAV's fast path (:data:`FAST_SEEK`: it skips what no frame taken needs, where decord decodes
every frame up to each one taken), with the same frames, times and pixels; PyAV too when decord is
missing or cannot open the file. PyAV always reads the facts (container, codec, duration, rotation,
start), because decord does not report rotation. Rotation from the display matrix is applied to every
frame (``np.rot90``), as players do.

URLs (:mod:`acfd.scanner.urls`: http(s) incl. HLS, rtsp, rtmp, srt, udp) are decoded by PyAV only (decord
reads local files), with FFmpeg's protocols limited to what the scheme needs and ``timeout_s`` on opening
and on every read. ``Sampling(frames=N)`` needs the stream's duration (a live stream has none: use fps);
it reads a URL twice (the frame times first). A URL whose frames stop well before its duration (a cut or
stalled connection: FFmpeg ends it as if it were the end) is a :class:`DecodeError`, not a short video:
stored as an error, it is tried again with ``--retry-errors`` instead of keeping a verdict on a part.
Error lines never hold the URL's password.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
from acfd.schemas.errors import AcfdError

from .urls import ffmpeg_options, is_url, redact

# Stop a PyAV decode after this many undecodable packets in a row (a corrupt tail).
MAX_BAD_PACKETS = 50

# FFmpeg's timeouts for a URL when none is given (a scan gives its --timeout).
URL_TIMEOUT_S = 300.0
# A URL's frames must reach its duration to within this share of it (and at least EARLY_END_MIN_S
# more than two frame intervals): HLS durations are the playlist's rounded EXTINF values.
EARLY_END_SHARE = 0.05
EARLY_END_MIN_S = 0.5


class DecodeError(AcfdError):
    """A file cannot be decoded as a video (the message is one line, fit for the ``error`` column)."""


# A requested rate this high takes every frame of any real video (kept for --fps 5000 and old stores).
EVERY_FRAME_FPS = 1000.0


@dataclass(frozen=True)
class Sampling:
    """Which frames to take: ``fps`` per second of video, ``frames`` spread evenly, or ``every`` frame
    (exactly one of the three: ``Sampling(fps=None, every=True)`` is :data:`EVERY_FRAME`)."""

    fps: float | None = 1.0
    frames: int | None = None
    every: bool = False

    def __post_init__(self) -> None:
        if (self.fps is not None) + (self.frames is not None) + bool(self.every) != 1:
            raise DecodeError("choose exactly one of fps, frames and every frame")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise DecodeError(f"fps must be positive, got {self.fps}")
        if self.frames is not None and self.frames < 1:
            raise DecodeError(f"frames must be at least 1, got {self.frames}")

    @property
    def every_frame(self) -> bool:
        """True when every frame is taken: asked for, or a rate so high that it amounts to it."""
        return self.every or (self.fps is not None and self.fps >= EVERY_FRAME_FPS)

    def describe(self) -> str:
        """``every frame``, ``N frames per video`` or ``F frames/s``."""
        if self.every_frame:
            return "every frame"
        return f"{self.frames} frames per video" if self.frames is not None else f"{self.fps:g} frames/s"


EVERY_FRAME = Sampling(fps=None, every=True)


@dataclass(frozen=True)
class VideoInfo:
    """Facts of a video stream (``width``/``height`` as displayed, after ``rotation``)."""

    container: str
    codec: str
    duration_s: float | None
    fps: float | None
    n_frames_total: int | None
    width: int
    height: int
    rotation: int  # degrees counter-clockwise applied for display (0, 90, 180, -90)
    decoder: str = "pyav"
    # The stream's start time (FFmpeg's start_time): a local file's frame times are counted from it, by
    # every decoder (0.852 s on one camera's MP4), so a frame has one time whichever decoder read it.
    start_s: float = 0.0


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its index in decode order, presentation time, upright RGB pixels."""

    index: int
    time_s: float
    image: np.ndarray


def _one_line(e: object) -> str:
    # FFmpeg errors carry the path in str(e); the error column has the path already.
    msg = getattr(e, "strerror", None) if isinstance(getattr(e, "strerror", None), str) else None
    s = " ".join((msg or str(e)).split()) or e.__class__.__name__
    return s if len(s) < 300 else s[:297] + "..."


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _check_file(path: str) -> int:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror}") from e
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    return size


def _open_av(path: str, timeout_s: float | None = None):  # noqa: ANN202 - PyAV container
    import av

    if not is_url(path):
        kw: dict = {}
    else:
        t = _timeout(timeout_s)
        kw = {"options": ffmpeg_options(path, t), "timeout": (t, t)}
    try:
        return av.open(path, metadata_errors="ignore", **kw)
    except av.error.InvalidDataError as e:
        raise DecodeError(f"not a readable video container ({_one_line(e)})") from e
    except av.error.ExitError as e:  # PyAV's timeout interrupted FFmpeg (URLs only)
        raise DecodeError(f"timed out after {kw['timeout'][0]:g} s while opening") from e
    except av.error.ProtocolNotFoundError as e:
        # e.g. srt:// with an FFmpeg built without libsrt (PyAV's wheels)
        raise DecodeError(f"this FFmpeg (PyAV's) cannot read {path.split(':', 1)[0]}:// URLs ({_one_line(e)})") from e
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot open: {_one_line(e)}") from e
    except OSError as e:
        raise DecodeError(f"cannot open: {e.strerror or _one_line(e)}") from e


def _timeout(timeout_s: float | None) -> float:
    return URL_TIMEOUT_S if timeout_s is None else timeout_s


def _without_password(e: DecodeError, path: str) -> DecodeError:
    """``e`` without ``path``'s credentials when ``path`` is a URL (FFmpeg messages may quote it)."""
    return DecodeError(redact(str(e), path)) if is_url(path) else e


def probe(path: str, timeout_s: float | None = None) -> VideoInfo:
    """The facts of ``path``'s first video stream (decodes its first frame to learn the rotation).
    ``path`` may be a URL (``timeout_s``: FFmpeg's timeouts for it, see the module docstring)."""
    try:
        return _probe(path, timeout_s)
    except DecodeError as e:
        if not is_url(path):
            raise
        raise _without_password(e, path) from None


def _probe(path: str, timeout_s: float | None) -> VideoInfo:
    import time

    import av

    url = is_url(path)
    if not url:
        _check_file(path)
    t0 = time.monotonic()
    with _open_av(path, timeout_s) as c:
        if not c.streams.video:
            if url and time.monotonic() - t0 >= 0.9 * _timeout(timeout_s):
                # PyAV's timeout cut the open short before any stream was found
                raise DecodeError(f"timed out after {_timeout(timeout_s):g} s while opening")
            kinds = sorted({s.type for s in c.streams}) or ["none"]
            raise DecodeError(f"no video stream (streams: {', '.join(kinds)})")
        s = c.streams.video[0]
        cc = s.codec_context
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else None
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        rotation = 0
        w, h = cc.width, cc.height
        try:
            for frame in c.decode(s):
                rotation = int(round(frame.rotation or 0))
                w, h = frame.width, frame.height
                break
            else:
                raise DecodeError("no decodable video frames")
        except av.error.ExitError as e:  # PyAV's timeout (URLs only)
            raise DecodeError(f"timed out after {_timeout(timeout_s):g} s waiting for the first frame") from e
        except av.error.FFmpegError as e:
            raise DecodeError(f"cannot decode the first frame ({_one_line(e)})") from e
        if round(rotation / 90) % 2:
            w, h = h, w
        start = float(s.start_time * s.time_base) if s.start_time is not None and s.time_base is not None else 0.0
        return VideoInfo(
            container=c.format.name,
            codec=cc.name,
            duration_s=duration,
            fps=fps,
            n_frames_total=s.frames or None,
            width=int(w),
            height=int(h),
            rotation=rotation,
            start_s=start if math.isfinite(start) else 0.0,
        )


# How far a frame time may sit before a target and still count as at it: two float32 steps, relative.
# decord gives float32 times (1.4 s reads 1.39999998, so at 5 frame/s of a 25 frame/s video it took
# the frame after each such target, and --frames broke ties the other way than PyAV); PyAV's float64
# times get the same slack, so both decoders take the same frames. Frames are much further apart
# (8.3 ms at 120 frame/s); the slack stops growing at 2 ms (2.3 hours into a file), since a live
# stream's clock may read a day (MPEG-TS: up to 26.5 h), where two float32 steps would be 21 ms.
_REL_SLACK = 2.4e-7
_MAX_SLACK_S = 2e-3


def _slack(t: np.ndarray | float) -> np.ndarray | float:
    if isinstance(t, float):  # a stream's frames one by one: numpy's call would cost 10x the rest of take()
        return min(max(_REL_SLACK * abs(t), 1e-9), _MAX_SLACK_S)
    return np.clip(_REL_SLACK * np.abs(t), 1e-9, _MAX_SLACK_S)


def select_indices(times: np.ndarray, sampling: Sampling) -> list[int]:
    """Indices of the frames to take, given every frame's presentation time (sorted or not)."""
    n = len(times)
    if n == 0:
        return []
    if sampling.every_frame or (sampling.frames is not None and sampling.frames >= n):
        return list(range(n))  # asking for at least as many frames as there are takes them all
    order = np.argsort(times, kind="stable")
    ts = np.asarray(times, dtype=np.float64)[order]
    t0, t_end = float(ts[0]), float(ts[-1])
    if sampling.fps is not None:
        step = 1.0 / sampling.fps
        targets = t0 + step * np.arange(int(math.floor((t_end - t0 + _slack(t_end)) / step)) + 1)
        pos = np.searchsorted(ts, targets - _slack(targets), side="left")  # first frame at or after each target
    else:
        assert sampling.frames is not None
        span = t_end - t0 + (float(np.median(np.diff(ts))) if n > 1 else 0.0)
        targets = t0 + (np.arange(sampling.frames) + 0.5) * span / sampling.frames
        pos = np.clip(np.searchsorted(ts, targets), 0, n - 1)
        prev = np.clip(pos - 1, 0, n - 1)  # nearest of the two neighbours
        # a tie (within the slack) goes to the earlier frame
        pos = np.where(np.abs(ts[prev] - targets) <= np.abs(ts[pos] - targets) + _slack(targets), prev, pos)
    pos = pos[pos < n]
    return sorted({int(order[p]) for p in pos})


class _StreamSelector:
    """``select_indices`` for a stream whose times arrive one by one (PyAV), for the fps mode."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.next_t: float | None = None

    def take(self, t: float) -> bool:
        s = self.sampling
        if s.every_frame:
            return True
        if s.fps is not None:
            step = 1.0 / s.fps
            if self.next_t is None:
                self.next_t = t
            slack = _slack(t)
            if t + slack >= self.next_t:
                # next grid point strictly after t, on the grid anchored at the first frame
                while self.next_t <= t + slack:
                    self.next_t += step
                return True
            return False
        raise AssertionError("frames mode uses select_indices on known times")


def _pyav_frame_times(path: str, info: VideoInfo | None = None, timeout_s: float | None = None) -> list[float]:
    """Every frame's presentation time, from packets alone (no decoding); a URL is read to its end
    (``info``: its facts, to tell a cut one)."""
    times: list[float] = []
    with _open_av(path, timeout_s) as c:
        s = c.streams.video[0]
        tb = s.time_base or Fraction(1, 1)
        packets = _Demux(c, s, path, info, timeout_s)
        for pkt in packets:
            if pkt.size == 0:
                continue
            pts = pkt.pts if pkt.pts is not None else pkt.dts
            if pts is not None:
                times.append(float(pts * tb))
        packets.check_complete()
    return times


def _frames_pyav(path: str, info: VideoInfo, sampling: Sampling, timeout_s: float | None = None) -> Iterator[Frame]:
    """The sampled frames by PyAV: a local file through the fast path (:data:`FAST_SEEK`) where its packets
    allow it, else (and from where the fast path gives up) by decoding every frame."""
    last_t = float("-inf")
    if _fast_path_applies(path, info, sampling):
        plan = _packet_plan(path)
        if plan is not None:
            try:
                for f in _frames_pyav_fast(path, info, sampling, plan):
                    last_t = f.time_s
                    yield f
                return
            except _NotFast:
                pass  # decode every frame from the start; what was yielded is not yielded again
    for f in _frames_pyav_plain(path, info, sampling, timeout_s):
        if f.time_s > last_t:
            yield f


# PyAV's fast path for a local file (not every frame): a demux pass (no decoding) lists every packet's
# time and keyframe flag; the frames the plain path would take are chosen from those times by the same
# rules; then, for each, decoding jumps to the last keyframe before it when that keyframe lies ahead, skips
# non-reference frames that are not taken (FFmpeg's skip_frame=NONREF: nothing refers to them), and stops
# after the last one taken. Same frames, indices and pixels as decoding every frame (tests/test_decode.py);
# a stream that does not behave (packets without times, discarded or corrupt ones, a frame taken that the
# decoder does not give, a decoding error) goes back to decoding every frame. Off: every frame is decoded.
FAST_SEEK = True
# Containers whose index is read when they are opened (a playlist or a transport stream may still grow).
_INDEXED = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"})

# Decoder threads. PyAV: 0 lets FFmpeg choose (as many as there are cores, frame and slice threads); decord:
# one. The pixels do not depend on them; bench/decode.py measures others.
PYAV_THREADS = 0
DECORD_THREADS = 1


class _NotFast(Exception):
    """The fast path cannot vouch for its frames here: decode every frame instead."""


@dataclass(frozen=True)
class _PacketPlan:
    pts: list[int]  # per packet in decode order
    key: list[int]  # decode positions of the keyframes
    time_base: Fraction


def _packet_plan(path: str) -> _PacketPlan | None:
    """Every packet's time and keyframe flag (one demux pass, no decoding); None when the stream's packets
    do not allow the fast path."""
    import av

    pts: list[int] = []
    key: list[int] = []
    try:
        with _open_av(path) as c:
            s = c.streams.video[0]
            tb = s.time_base or Fraction(1, 1)
            for pkt in c.demux(s):
                if pkt.size == 0:
                    continue
                if pkt.pts is None or pkt.is_discard or pkt.is_corrupt:
                    return None
                if pkt.is_keyframe:
                    key.append(len(pts))
                pts.append(int(pkt.pts))
    except (DecodeError, av.error.FFmpegError, OSError):
        return None  # the plain path says what is wrong
    if not pts or not key or key[0] != 0 or len(set(pts)) != len(pts):
        return None
    return _PacketPlan(pts, key, tb)


def _frames_pyav_fast(path: str, info: VideoInfo, sampling: Sampling, plan: _PacketPlan) -> Iterator[Frame]:
    import av

    num, den = plan.time_base.numerator, plan.time_base.denominator
    order = sorted(plan.pts)  # presentation order: a frame's index is its rank in it
    # a frame's time as the plain path computes it, float(pts * time_base): the same correctly rounded quotient
    if sampling.frames is not None:
        take = select_indices(np.asarray([p * num / den for p in order]), sampling)
    else:
        selector = _StreamSelector(sampling)
        take = [i for i, p in enumerate(order) if selector.take(p * num / den)]
    wanted = [order[i] for i in take]  # pts, ascending
    index = dict(zip(wanted, take, strict=True))
    where = {p: i for i, p in enumerate(plan.pts) if p in index}  # decode positions of the frames to take
    key_at = {plan.pts[i]: i for i in plan.key}  # decode positions of the keyframes, by pts
    with _open_av(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"  # as the plain path
        cc = s.codec_context
        if PYAV_THREADS:
            cc.thread_count = PYAV_THREADS
        packets: Iterator = iter(())
        sent = 0  # decode position of the next packet to send
        j = 0  # next frame to take (index into wanted)
        try:
            while j < len(wanted):
                target = wanted[j]
                # the last keyframe at or before the target in decode order and not after it in time (an
                # open GOP's leading frames need the keyframe before theirs)
                k = bisect.bisect_right(plan.key, where[target]) - 1
                while k > 0 and plan.pts[plan.key[k]] > target:
                    k -= 1
                if plan.key[k] > sent or sent == 0:
                    # nothing between here and that keyframe is needed: jump there (flushes the decoder)
                    if sent or plan.key[k]:
                        c.seek(plan.pts[plan.key[k]], stream=s, backward=True)
                    packets = iter(c.demux(s))
                    sent = -1  # where the demuxer landed: read from the first packet
                pkt = next(packets, None)
                if pkt is None:
                    raise _NotFast()  # the file ended before the frames to take (a truncated tail)
                if pkt.size == 0:
                    frames = pkt.decode()  # the end: the decoder's last frames
                else:
                    if sent == -1:
                        if key_at.get(pkt.pts, plan.key[k] + 1) > plan.key[k]:
                            raise _NotFast()  # landed somewhere else than on a keyframe at or before it
                        sent = key_at[pkt.pts]
                    elif sent >= len(plan.pts) or plan.pts[sent] != pkt.pts:
                        raise _NotFast()  # not the packets the plan read
                    sent += 1
                    cc.skip_frame = "DEFAULT" if pkt.pts in index else "NONREF"
                    frames = pkt.decode()
                for f in frames:
                    if f.pts is None or f.is_corrupt:
                        raise _NotFast()
                    if f.pts < target:
                        continue  # decoded only as a reference (or after a jump, a frame before the target)
                    if f.pts > target:
                        raise _NotFast()  # the frame to take did not come out (dropped by the decoder)
                    yield Frame(index[target], target * num / den, _rotate(f.to_ndarray(format="rgb24"), info.rotation))
                    j += 1
                    target = wanted[j] if j < len(wanted) else None  # type: ignore[assignment]
                    if target is None:
                        break
                if pkt.size == 0 and j < len(wanted):
                    raise _NotFast()
        except av.error.FFmpegError as e:
            raise _NotFast() from e


def _frames_pyav_plain(path: str, info: VideoInfo, sampling: Sampling, timeout_s: float | None = None) -> Iterator[Frame]:
    import av

    wanted: set[int] | None = None
    wanted_times: list[float] = []
    if sampling.frames is not None:
        # The frames mode needs every frame's time first: a demux pass is cheap (no decoding).
        times = sorted(_pyav_frame_times(path, info, timeout_s))
        wanted = set(select_indices(np.asarray(times), sampling)) if times else set()
        wanted_times = [times[i] for i in sorted(wanted)]
    selector = _StreamSelector(sampling)
    with _open_av(path, timeout_s) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if PYAV_THREADS:
            s.codec_context.thread_count = PYAV_THREADS
        tb = s.time_base or Fraction(1, 1)
        index = -1
        bad = 0
        last_error = ""
        packets = _Demux(c, s, path, info, timeout_s)
        for pkt in packets:
            try:
                frames = pkt.decode()
                bad = 0
            except av.error.FFmpegError as e:
                bad += 1
                last_error = _one_line(e)
                if bad >= MAX_BAD_PACKETS:
                    raise DecodeError(f"decoding stopped: {MAX_BAD_PACKETS} bad packets in a row ({last_error})") from e
                continue
            for f in frames:
                index += 1
                t = float(f.pts * tb) if f.pts is not None else (index / info.fps if info.fps else float(index))
                if wanted is not None:
                    # match by time: decode order and sorted packet times agree for presentation order
                    i = bisect.bisect_left(wanted_times, t - 1e-6)
                    take = i < len(wanted_times) and abs(wanted_times[i] - t) < 1e-6
                else:
                    take = selector.take(t)
                if take:
                    yield Frame(index, t, _rotate(f.to_ndarray(format="rgb24"), info.rotation))
        packets.check_complete()


class _Demux:
    """``c.demux(s)``; for a URL, how far its packets got (presentation times), so that a stream that
    stops short of its duration, breaks off with a read error or times out (PyAV's timeout) is one
    DecodeError line that says so. A local file's errors pass unchanged."""

    def __init__(self, c, s, path: str, info: VideoInfo | None, timeout_s: float | None) -> None:  # noqa: ANN001
        self.c, self.s, self.info, self.timeout_s = c, s, info, timeout_s
        self.url = is_url(path)
        self.tb = s.time_base or Fraction(1, 1)
        self.first: float | None = None
        self.last = 0.0

    def __iter__(self) -> Iterator:
        import av

        try:
            for pkt in self.c.demux(self.s):
                if self.url and pkt.pts is not None and pkt.size:
                    t = float(pkt.pts * self.tb)
                    self.first = t if self.first is None else min(self.first, t)
                    self.last = max(self.last, t)
                yield pkt
        except av.error.ExitError as e:  # only URLs have a timeout
            raise DecodeError(f"timed out after {_timeout(self.timeout_s):g} s without data") from e
        except av.error.OSError as e:
            if not self.url:
                raise
            raise DecodeError(f"the stream ended early: {self._got()} ({_one_line(e)})") from e

    def _got(self) -> str:
        info = self.info
        step = 1.0 / info.fps if info is not None and info.fps else 0.0
        got = 0.0 if self.first is None else self.last - self.first + step
        of = f" of its {info.duration_s:.1f} s" if info is not None and info.duration_s else ""
        return f"{got:.1f} s{of} arrived"

    def check_complete(self) -> None:
        """For a URL with a duration: its packets must reach it (within EARLY_END_*); FFmpeg ends a cut or
        stalled read as if the stream had ended, and a verdict on a part would then stand for the whole."""
        info = self.info
        if not self.url or info is None or info.duration_s is None or not info.duration_s > 0:
            return  # a file (what it holds is what it is), or a live stream: its end is where it ended
        step = 1.0 / info.fps if info.fps else 0.0
        got = 0.0 if self.first is None else self.last - self.first + step
        if got < info.duration_s - max(EARLY_END_MIN_S + 2 * step, EARLY_END_SHARE * info.duration_s):
            raise DecodeError(f"the stream ended early: {self._got()} (the connection was cut or stalled, "
                              "or the file is cut)")


_DECORD_GPU_OK: bool | None = None


def _decord_reader(path: str, gpu: bool):  # noqa: ANN202 - decord.VideoReader
    import decord

    global _DECORD_GPU_OK
    if gpu and _DECORD_GPU_OK is not False:
        try:
            vr = decord.VideoReader(path, ctx=decord.gpu(0))
            _DECORD_GPU_OK = True
            return vr, "decord-gpu"
        except Exception:  # a CPU-only build (decord2 from PyPI) or no GPU: remember, use the CPU
            _DECORD_GPU_OK = False
    return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=DECORD_THREADS), "decord"


# A frame time beyond this (s) is not a time: decord's reading of a packet without one (FFmpeg's
# AV_NOPTS_VALUE times the time base: -3.7e17 s for an AVI with B-frames).
_DECORD_TIME_LIMIT_S = 1e7


def _decord_times(vr) -> np.ndarray:  # noqa: ANN001 - decord.VideoReader
    """Every frame's presentation time as decord reads it (s)."""
    n = len(vr)
    return vr.get_frame_timestamp(np.arange(n))[:, 0] if n else np.zeros(0)


def _times_usable(times: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(times)) and np.all(np.abs(times) < _DECORD_TIME_LIMIT_S))


def _frames_decord(vr, info: VideoInfo, sampling: Sampling, chunk: int = 8,  # noqa: ANN001
                   times: np.ndarray | None = None) -> Iterator[Frame]:
    times = _decord_times(vr) if times is None else times
    idx = select_indices(times, sampling)
    i, size = 0, 1
    while i < len(idx):
        # batches of 1, 2, 4, ... up to ``chunk`` frames: the first frame comes out as soon as it is
        # decoded (at 1 frame/s, 8 frames of a 1080p video took a second to decode before the first face
        # could be looked for), later ones in fewer calls
        part = idx[i : i + size]
        batch = vr.get_batch(part).asnumpy()
        for j, k in enumerate(part):
            yield Frame(int(k), float(times[k]), _decord_upright(batch[j], info))
        i += len(part)
        size = min(chunk, 2 * size)


def _decord_upright(img: np.ndarray, info: VideoInfo) -> np.ndarray:
    # decord2 (>= 3) applies the display matrix itself, decord 0.6 does not: rotate only frames that
    # do not already have the displayed shape (and 180 degrees only for the old decord).
    import decord

    quarter = round(info.rotation / 90) % 4
    if quarter in (1, 3) and img.shape[:2] == (info.width, info.height) != (info.height, info.width):
        return _rotate(img, info.rotation)
    if quarter == 2 and int(str(decord.__version__).split(".")[0]) < 3:
        return _rotate(img, info.rotation)
    return img


def decoder_available(name: str) -> bool:
    if name == "decord":
        try:
            import decord  # noqa: F401
        except Exception:
            return False
    return True


def open_frames(
    path: str, sampling: Sampling, decoder: str = "auto", gpu: bool = False, timeout_s: float | None = None,
    stream: bool = False,
) -> tuple[VideoInfo, Iterator[Frame]]:
    """Facts and a frame iterator for ``path``. ``decoder``: "auto", "decord", "pyav".

    ``auto``: decord on the GPU (a CUDA build of decord with ``gpu``) and for every frame; PyAV for a sample
    of a local file's frames on a CPU (its fast path: the same frames and pixels as decord for less CPU);
    PyAV when decord is missing or cannot open the file. A local file's frame times count from the stream's
    start whichever decoder reads it; a URL's and a ``stream``'s are the stream's own clock.

    ``path`` may be a URL: PyAV only, ``timeout_s`` for FFmpeg (see the module docstring). ``stream``: read
    it as a live stream, in order as it comes (never through PyAV's fast path, which plans from an index).
    Raises :class:`DecodeError` with a one-line reason for files that are not decodable videos.
    """
    if is_url(path):
        if decoder == "decord":
            raise DecodeError("decord reads local files only: a URL is decoded with PyAV (--decoder auto or pyav)")
        info = probe(path, timeout_s)
        if sampling.frames is not None and not sampling.every_frame and info.duration_s is None:
            raise DecodeError("--frames needs the stream's duration and this one has none (a live stream?): "
                              "use --fps")
        return info, _guard(_frames_pyav(path, info, sampling, timeout_s), "pyav", url=path)
    info = probe(path)
    gpu_possible = gpu and _DECORD_GPU_OK is not False  # False once this process found no CUDA decord
    fast = decoder == "auto" and not stream and not decord_first(decoder, sampling, gpu_possible) \
        and _fast_path_applies(path, info, sampling)
    if decoder != "pyav" and not fast and decoder_available("decord"):
        opened = _open_decord(path, info, sampling, decoder, gpu)
        if opened is not None:
            return opened
    if stream:
        return info, _guard(_frames_pyav_plain(path, info, sampling), "pyav")  # the stream's own clock
    return info, _guard(_from_start(_frames_pyav(path, info, sampling), info.start_s), "pyav")


def decord_first(decoder: str, sampling: Sampling, gpu: bool) -> bool:
    """Whether decord decodes a local file before PyAV is tried: always with ``--decoder decord``; with
    ``auto`` for every frame and for GPU decoding. Otherwise ``auto`` samples a file on a CPU through PyAV's
    fast path where it applies: the same frames and pixels for about half decord's CPU, since decord decodes
    every frame up to each one taken (bench/decode.py). A decode worker loads decord at its start only when
    this says so."""
    return decoder == "decord" or (decoder == "auto" and (sampling.every_frame or gpu))


def _open_decord(
    path: str, info: VideoInfo, sampling: Sampling, decoder: str, gpu: bool
) -> tuple[VideoInfo, Iterator[Frame]] | None:
    """decord's facts and frames for a local file; None where ``auto`` goes on with PyAV (decord cannot
    open the file, or reads no frame times from it), a DecodeError for ``--decoder decord``."""
    try:
        vr, name = _decord_reader(path, gpu)
    except Exception as e:
        if decoder == "decord":
            raise DecodeError(f"decord cannot open the file ({_one_line(e)})") from e
        return None
    times = _decord_times(vr)
    if not _times_usable(times):
        if decoder == "decord":
            raise DecodeError("decord reads no frame times from this file (packets without timestamps, as in "
                              "an AVI with B-frames): use --decoder auto or pyav")
        return None  # PyAV reads them (it numbers frames without a time by the frame rate)
    info = replace(info, decoder=name)
    return info, _guard(_frames_decord(vr, info, sampling, times=times), name)


def _fast_path_applies(path: str, info: VideoInfo, sampling: Sampling) -> bool:
    """Whether PyAV's fast path is worth trying: a sample (not every frame) of a local, indexed file."""
    return (FAST_SEEK and not is_url(path) and not sampling.every_frame and info.container in _INDEXED
            and bool(info.duration_s))


def _from_start(frames: Iterator[Frame], start_s: float) -> Iterator[Frame]:
    """A local file's frames with their times counted from the stream's start, as decord counts them."""
    if not start_s:
        yield from frames
        return
    for f in frames:
        yield Frame(f.index, f.time_s - start_s, f.image)


def _guard(frames: Iterator[Frame], name: str, url: str | None = None) -> Iterator[Frame]:
    """Turn a decoder's exceptions in the middle of a stream into DecodeError (one line), without the
    credentials of ``url``."""
    try:
        yield from frames
    except DecodeError as e:
        if url is None:
            raise
        raise _without_password(e, url) from None
    except Exception as e:
        err = DecodeError(f"{name} failed while decoding ({_one_line(e)})")
        if url is None:
            raise err from e
        raise _without_password(err, url) from None
