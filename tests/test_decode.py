"""Decoding: facts, sampling by time (CFR and VFR), rotation, both decoders, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from acfd.scanner.decode import EVERY_FRAME, DecodeError, Sampling, open_frames, probe, select_indices

from tests import scan_helpers as H
from tests.media import write_video

DECODERS = ["decord", "pyav"]


def test_select_indices():
    t = np.arange(50) / 25.0  # 2 s at 25 fps
    assert select_indices(t, Sampling(fps=1)) == [0, 25]
    assert select_indices(t, Sampling(fps=2)) == [0, 13, 25, 38]  # first frame at or after 0, .5, 1, 1.5
    assert select_indices(t, Sampling(fps=None, frames=4)) == [6, 19, 31, 44]  # centres of 4 equal parts
    assert select_indices(t, EVERY_FRAME) == list(range(50))
    assert select_indices(t[:3], Sampling(fps=None, frames=10)) == [0, 1, 2]  # never more than there is
    vfr = np.array([0.0, 0.1, 0.2, 1.5, 1.6, 3.05])
    assert select_indices(vfr, Sampling(fps=1)) == [0, 3, 5]  # targets 0, 1, 2, 3 s
    with pytest.raises(DecodeError):
        Sampling(fps=1, frames=3)
    with pytest.raises(DecodeError):
        Sampling(fps=None, frames=0)


def test_select_indices_takes_the_same_frames_from_float32_and_float64_times():
    # decord's times are float32 (1.4 s reads 1.39999998): it used to take the frame after such a target
    # at 5 frame/s, and break --frames ties the other way than PyAV's float64 times
    t64 = np.arange(303) / 25.0
    t32 = t64.astype(np.float32)
    assert float(t32[35]) < 1.4  # the case: frame 35 is at 1.4 s exactly, float32 says a little before
    for sampling in (Sampling(fps=5), Sampling(fps=12.5), Sampling(fps=None, frames=7)):
        assert select_indices(t32, sampling) == select_indices(t64, sampling)
    assert select_indices(t32, Sampling(fps=5))[:9] == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    # 7 targets over 12.12 s: the 4th (6.06 s) lies half-way between frames 151 and 152: the earlier one
    assert select_indices(t32, Sampling(fps=None, frames=7)) == [22, 65, 108, 151, 195, 238, 281]
    # a live stream's clock a day in: the slack stays at 2 ms (two float32 steps there would be 21 ms),
    # so a frame 10 ms before a target is not taken for it
    from acfd.scanner.decode import _StreamSelector

    day = 86400.0 + np.array([0.0, 0.99, 1.007, 2.0])
    assert select_indices(day, Sampling(fps=1)) == [0, 2, 3]
    selector = _StreamSelector(Sampling(fps=1))
    assert [selector.take(float(t)) for t in day] == [True, False, True, True]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    return {
        "face": H.face_video(d / "face.mp4", n=25, fps=10),
        "rot": H.rotated_face_video(d / "rot.mp4", n=3),
        "vfr": H.vfr_video(d / "vfr.mp4", [0.0, 0.04, 0.08, 1.3, 1.33, 2.9, 3.0]),
        # a stream that starts at 0.8 s, as a camera's MP4 may: frame times count from its start
        "late": H.vfr_video(d / "late.mp4", [0.8 + i / 10 for i in range(25)]),
        "one": write_video(d / "one.mp4", H.moving_face_frames(1, (120, 160)), fps=25),
        "4k": H.four_k(d / "4k.mp4"),
        "audio": H.audio_only(d / "audio.m4a"),
        "zero": _write(d / "zero.mp4", b""),
        "random": H.random_bytes(d / "random.mp4"),
        "text": _write(d / "text.avi", b"just some text\n" * 20),
    }


@pytest.mark.parametrize("decoder", DECODERS)
def test_sampling_cfr(vids, decoder):
    info, frames = open_frames(str(vids["face"]), Sampling(fps=1), decoder)
    got = [(f.index, round(f.time_s, 3), f.image.shape) for f in frames]
    assert info.decoder == decoder and info.width == 320 and info.height == 240
    assert info.duration_s == pytest.approx(2.5, abs=0.11) and info.fps == pytest.approx(10)
    assert got == [(0, 0.0, (240, 320, 3)), (10, 1.0, (240, 320, 3)), (20, 2.0, (240, 320, 3))]
    _, frames = open_frames(str(vids["face"]), Sampling(fps=None, frames=4), decoder)
    assert [f.index for f in frames] == [3, 9, 16, 22]  # nearest to 0.3125, 0.9375, 1.5625, 2.1875 s


@pytest.mark.parametrize("decoder", DECODERS)
def test_sampling_vfr_by_time(vids, decoder):
    # frames at 0, .04, .08, 1.3, 1.33, 2.9, 3.0 s; targets 0, 1, 2, 3 s: the first frame at or after each
    _, frames = open_frames(str(vids["vfr"]), Sampling(fps=1), decoder)
    assert [(f.index, round(f.time_s, 2)) for f in frames] == [(0, 0.0), (3, 1.3), (5, 2.9), (6, 3.0)]


@pytest.mark.parametrize("decoder", DECODERS)
def test_rotation_is_applied(vids, decoder):
    info, frames = open_frames(str(vids["rot"]), Sampling(fps=None, frames=1), decoder)
    (f,) = list(frames)
    assert info.rotation == 90 and (info.width, info.height) == (320, 240)
    assert f.image.shape == (240, 320, 3)
    # upright again: equal (up to compression) to the frame that was written before turning it
    want = H.moving_face_frames(3, (240, 320))[f.index]
    assert np.abs(f.image.astype(int) - want).mean() < 6


@pytest.mark.parametrize("decoder", DECODERS)
def test_one_frame_and_4k(vids, decoder):
    _, frames = open_frames(str(vids["one"]), Sampling(fps=1), decoder)
    assert [f.index for f in frames] == [0]
    info, frames = open_frames(str(vids["4k"]), EVERY_FRAME, decoder)
    assert (info.width, info.height) == (3840, 2160)
    assert [f.image.shape for f in frames] == [(2160, 3840, 3)] * 2


@pytest.mark.parametrize(
    "name,message",
    [
        ("zero", "empty file (0 bytes)"),
        ("random", "not a readable video container"),
        ("text", "not a readable video container"),
        ("audio", "no video stream (streams: audio)"),
    ],
)
def test_bad_files_give_one_line(vids, name, message):
    with pytest.raises(DecodeError) as e:
        probe(str(vids[name]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_auto_samples_with_pyav_and_takes_every_frame_with_decord_on_one_clock(vids):
    clip = vids["late"]
    info, frames = open_frames(str(clip), Sampling(fps=1), "auto")
    auto = list(frames)
    assert info.decoder == "pyav" and info.start_s == pytest.approx(0.8)  # a sample on a CPU: the fast path
    assert [(f.index, round(f.time_s, 3)) for f in auto] == [(0, 0.0), (10, 1.0), (20, 2.0)]
    _, frames = open_frames(str(clip), Sampling(fps=1), "decord")
    by_decord = list(frames)
    assert [f.index for f in by_decord] == [0, 10, 20]
    assert max(abs(a.time_s - b.time_s) for a, b in zip(auto, by_decord, strict=True)) < 1e-5  # decord: float32
    assert all(np.array_equal(a.image, b.image) for a, b in zip(auto, by_decord, strict=True))
    info, frames = open_frames(str(clip), EVERY_FRAME, "auto")
    every = list(frames)
    assert info.decoder == "decord" and len(every) == 25  # every frame: decord
    _, frames = open_frames(str(clip), EVERY_FRAME, "pyav")
    assert [round(f.time_s, 3) for f in frames] == [round(f.time_s, 3) for f in every] == [i / 10 for i in range(25)]


def test_an_avi_whose_frames_decord_cannot_time_is_decoded_by_pyav(tmp_path):
    # decord read this file's frame times as -3.7e17 s (FFmpeg's "no time" times the time base): every
    # frame stored with that time, and a sample failed allocating 7.7 EiB before PyAV took over
    clip = H.avi_with_b_frames(tmp_path / "divx.avi", n=30, fps=10)
    info, frames = open_frames(str(clip), EVERY_FRAME, "auto")
    got = [(f.index, f.time_s) for f in frames]
    assert info.decoder == "pyav" and [i for i, _ in got] == list(range(30))
    times = [t for _, t in got]
    assert times == sorted(times) and 0.0 <= times[0] <= 0.1 and times[-1] == pytest.approx(times[0] + 2.9)
    info, frames = open_frames(str(clip), Sampling(fps=1), "auto")
    assert info.decoder == "pyav" and [f.index for f in frames] == [0, 10, 20]
    with pytest.raises(DecodeError, match="^decord reads no frame times from this file .*: use --decoder auto or pyav$"):
        open_frames(str(clip), EVERY_FRAME, "decord")


def test_truncated(vids, tmp_path):
    # x264 in MP4 writes its index (moov) at the end: cut in half, the file has no index
    cut = H.truncated(vids["face"], tmp_path / "cut.mp4")
    with pytest.raises(DecodeError, match="not a readable video container"):
        probe(str(cut))


@pytest.mark.parametrize("name", ["face", "late"])
def test_worker_falls_back_to_pyav_when_decord_fails_mid_stream(vids, monkeypatch, name):
    from acfd.scanner import decode, stages

    real = decode._frames_decord

    def failing(vr, info, sampling, chunk=8, times=None):
        it = real(vr, info, sampling, chunk, times)
        yield next(it)
        raise RuntimeError("DECORDError: simulated damaged packet")

    monkeypatch.setattr(decode, "_frames_decord", failing)
    monkeypatch.setattr(decode, "FAST_SEEK", False)  # else auto samples with PyAV's fast path, not decord

    class NoFaces:
        def detect(self, image):
            return []

    cfg = stages.FramesConfig(sampling=Sampling(fps=1), crop_size=64, crop_margin=1.3, decoder="auto")
    events = list(stages.frames_with_faces(cfg, NoFaces(), str(vids[name])))
    frames = [(e.index, round(e.time_s, 3)) for e in events if isinstance(e, stages.FrameFaces)]
    # frame 0 from decord, the rest from PyAV (on decord's clock, also for the late start), none twice
    assert frames == [(0, 0.0), (10, 1.0), (20, 2.0)]
    assert isinstance(events[-1], stages.Decoded) and events[-1].decoder == "decord+pyav"
    assert events[-1].n_frames == 3
    # PyAV failing too ends the video with PyAV's error (once: no second fallback, no loop)
    def pyav_fails(path, info, sampling):
        raise DecodeError("decoding stopped: simulated bad packets")
        yield

    monkeypatch.setattr(decode, "_frames_pyav", pyav_fails)
    with pytest.raises(DecodeError, match="simulated bad packets"):
        list(stages.frames_with_faces(cfg, NoFaces(), str(vids[name])))
    # asked for decord only, the failure is the video's error
    cfg = stages.FramesConfig(sampling=Sampling(fps=1), crop_size=64, crop_margin=1.3, decoder="decord")
    with pytest.raises(DecodeError, match="simulated damaged packet"):
        list(stages.frames_with_faces(cfg, NoFaces(), str(vids["face"])))


def _gop_clip(path, open_gop: bool = False):  # noqa: ANN001, ANN202
    """6 s at 10 fps (64x48) of a drifting pattern, H.264 with a keyframe every 5 frames and 3 B-frames
    (b-pyramid: some B-frames are references, some not); ``open_gop``: leading B-frames of each GOP refer
    to the GOP before."""
    import av

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:96]
    base = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], -1).astype(np.int16)
    params = "keyint=5:min-keyint=5:scenecut=0:bframes=3:b-adapt=0:b-pyramid=normal" + (":open-gop=1" if open_gop else "")
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"x264-params": params}
        for i in range(60):
            img = base[i % 16 : i % 16 + 48, (2 * i) % 32 : (2 * i) % 32 + 64] + rng.integers(-8, 9, (48, 64, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


@pytest.mark.parametrize("open_gop", [False, True], ids=["closed-gop", "open-gop"])
def test_pyav_fast_path_takes_the_frames_decoding_every_frame_takes(tmp_path, open_gop):
    """Keyframe jumps and skipped non-reference frames: the same indices, times and pixels."""
    from acfd.scanner import decode

    path = str(_gop_clip(tmp_path / "gop.mp4", open_gop))
    info = probe(path)
    plan = decode._packet_plan(path)
    assert plan is not None and len(plan.key) >= 10 and plan.pts != sorted(plan.pts)  # keyframes, B-frames
    for sampling in (Sampling(fps=1), Sampling(fps=3), Sampling(fps=0.25), Sampling(fps=None, frames=7)):
        plain = list(decode._frames_pyav_plain(path, info, sampling))
        fast = list(decode._frames_pyav_fast(path, info, sampling, plan))  # no fallback: it must not give up
        assert [(f.index, f.time_s) for f in fast] == [(f.index, f.time_s) for f in plain] and len(plain) >= 2
        assert all(np.array_equal(a.image, b.image) for a, b in zip(fast, plain, strict=True)), sampling


def test_pyav_fast_path_that_gives_up_goes_on_decoding_every_frame(tmp_path, monkeypatch):
    from acfd.scanner import decode

    path = str(_gop_clip(tmp_path / "gop.mp4"))
    want = [(f.index, f.time_s) for f in open_frames(path, Sampling(fps=2), "pyav")[1]]
    real = decode._frames_pyav_fast

    def gives_up(*a):  # noqa: ANN002, ANN202
        it = real(*a)
        yield next(it)
        yield next(it)
        raise decode._NotFast()

    monkeypatch.setattr(decode, "_frames_pyav_fast", gives_up)
    got = [(f.index, f.time_s) for f in open_frames(path, Sampling(fps=2), "pyav")[1]]
    assert got == want and len(got) == 12  # the first two from the fast path, none twice, none lost


def test_decord_batches_that_grow_give_the_frames_of_fixed_batches(tmp_path):
    """decord's batches of 1, 2, 4, ... frames (the first one out early) hold the same frames as batches of 8."""
    import decord
    from acfd.scanner import decode

    path = str(_gop_clip(tmp_path / "gop.mp4"))
    info = probe(path)
    got = {}
    for chunk in (1, 8):
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        frames = list(decode._frames_decord(vr, info, Sampling(fps=3), chunk=chunk))
        got[chunk] = [(f.index, f.time_s, f.image.tobytes()) for f in frames]
    assert got[1] == got[8] and len(got[8]) == 18
