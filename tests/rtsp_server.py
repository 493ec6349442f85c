"""A real RTSP server for tests: GStreamer's gst-rtsp-server serving one H.264 MP4 at rtsp://HOST:PORT/clip.

Run by the SYSTEM python (``/usr/bin/python3``), not the project's venv: PyGObject and the GStreamer
typelibs come from Debian (gir1.2-gst-rtsp-server-1.0, python3-gi; gstreamer1.0-plugins-base, -good
and -bad are its dependencies)::

    /usr/bin/python3 tests/rtsp_server.py CLIP.mp4 [--port 0] [--loop]

It prints ``READY rtsp://HOST:PORT/clip`` (the port it is bound to; ``--port 0`` lets the kernel choose, so
no race for a free port) once it listens, and stops on SIGTERM or SIGINT, or when its stdin closes (the
test that started it died without stopping it).

Every client gets its own pipeline ``filesrc ! qtdemux ! h264parse ! rtph264pay`` (no re-encoding: the
client receives the file's own H.264 frames), starting at the clip's first frame. Without ``--loop`` the
session ends with the clip, and its SDP gives the clip's duration (``a=range:npt=0-D``): a finite source.
With ``--loop`` the clip plays again and again without a gap, its timestamps going on (segment seeks),
like a camera's feed: a source without end.

Only the standard library and Debian's PyGObject here: this file must not import the project.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)  # before the subclasses below are registered: they refer to GStreamer's types

# pay0 is the name gst-rtsp-server looks for; config-interval=-1 sends SPS/PPS with every IDR frame, so
# a client may start decoding at any keyframe (the SDP carries them too, as sprop-parameter-sets).
PIPELINE = "( filesrc name=src ! qtdemux ! h264parse name=parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"


class LoopMedia(GstRtspServer.RTSPMedia):
    """A media that plays its clip without end: segment seeks, re-armed at each SEGMENT_DONE.

    A non-flushing segment seek back to the start at the end of each pass keeps the running time (and so
    the RTP timestamps) growing: a client sees one continuous stream, not a restart.
    """

    def do_prepared(self) -> None:
        # The first seek flushes (the pipeline is prerolled, paused); the later ones must not.
        self._seek(Gst.SeekFlags.SEGMENT | Gst.SeekFlags.FLUSH)
        # The flush took the payloader's segment away, and the server answers the client's PLAY by asking
        # the stream for its rate, which it reads from that segment: a PLAY that came before the seek's
        # first buffer had passed aborted the server (gst_rtsp_media_get_rates: assertion failed; seen
        # under load, about 1 open in 40). So the media is ready only once the new segment is there.
        pad = self.get_element().get_by_name("pay0").get_static_pad("src")
        deadline = time.monotonic() + 10.0
        while pad.get_sticky_event(Gst.EventType.SEGMENT, 0) is None and time.monotonic() < deadline:
            time.sleep(0.002)

    def do_handle_message(self, message: Gst.Message) -> bool:
        if message.type == Gst.MessageType.SEGMENT_DONE:
            self._seek(Gst.SeekFlags.SEGMENT)
            return True
        return GstRtspServer.RTSPMedia.do_handle_message(self, message)

    def do_query_stop(self, _stop: object) -> bool:
        # A feed without end has no stop. The default asks the pipeline for its segment's stop, and a
        # client's DESCRIBE may come before the first segment seek has replaced the clip's own segment
        # (stop = the clip's end): its SDP then said a=range:npt=0-3 (seen under load, about 1 in 4).
        # False ("no stop known") gives an open range, npt=0-, every time. (``_stop`` is the C out
        # pointer, which PyGObject passes in unannotated.)
        return False

    def _seek(self, flags: Gst.SeekFlags) -> None:
        self.get_element().seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)


class Gapless:
    """Rewrites each pass's segment so that it starts exactly where the previous pass ended.

    After a non-flushing seek GStreamer starts the new segment at the running time of the last buffer's
    *start*, so each pass would begin one frame early (two frames with the same timestamp at every loop).
    The new segment's base is set to the previous base plus the previous segment's length instead.
    """

    def __init__(self, pad: Gst.Pad) -> None:
        self.prev: Gst.Segment | None = None
        self.pushing = False
        pad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, self.probe)

    def probe(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        event = info.get_event()
        if self.pushing:  # our own replacement, on its way
            return Gst.PadProbeReturn.OK
        if event.type == Gst.EventType.FLUSH_STOP:
            self.prev = None  # a flushing seek restarts the running time at 0
        elif event.type == Gst.EventType.SEGMENT:
            seg, prev = event.parse_segment(), self.prev  # (a copy: the event's own is read-only)
            self.prev = seg
            if prev is not None and prev.stop != Gst.CLOCK_TIME_NONE:
                seg.base = prev.base + (prev.stop - prev.start)
                self.pushing = True
                try:
                    pad.push_event(Gst.Event.new_segment(seg))
                finally:
                    self.pushing = False
                return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """One pipeline per client over ``clip`` (the path is set as a property: no launch-line quoting)."""

    def __init__(self, clip: str, loop: bool) -> None:
        super().__init__()
        self.clip = clip
        self.loop = loop
        if loop:
            self.set_media_gtype(LoopMedia)

    def do_create_element(self, url: GstRtspServer.RTSPUrl) -> Gst.Element:
        bin_ = Gst.parse_launch(PIPELINE)
        bin_.get_by_name("src").set_property("location", self.clip)
        if self.loop:
            Gapless(bin_.get_by_name("parse").get_static_pad("src"))
        return bin_


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", help="an MP4 file with one H.264 video stream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (the READY line names it)")
    ap.add_argument("--path", default="/clip")
    ap.add_argument("--loop", action="store_true", help="play the clip without end, like a live feed")
    args = ap.parse_args(argv)
    clip = os.path.abspath(args.clip)
    if not os.path.isfile(clip):
        print(f"rtsp_server: no such file: {clip}", file=sys.stderr)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = ClipFactory(clip, args.loop)
    server.get_mount_points().add_factory(args.path, factory)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 2

    def stop(*_: object) -> bool:
        loop.quit()
        return False  # remove the source

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    # stdin is a pipe held by the test: EOF (or an error) means the test is gone, so the server goes too.
    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT,
                      GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR, _stdin_closed, stop)
    print(f"READY rtsp://{args.host}:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


def _stdin_closed(channel: GLib.IOChannel, _cond: GLib.IOCondition, stop) -> bool:  # noqa: ANN001
    """Stop at EOF on stdin; any line read is ignored (the watch stays)."""
    if os.read(channel.unix_get_fd(), 4096):
        return True
    stop()
    return False


if __name__ == "__main__":
    sys.exit(main())
