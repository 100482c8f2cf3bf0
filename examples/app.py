#!/usr/bin/env python3
"""quicnalusink and quicnalusrc inside one Python (PyGObject) application.

A live x265enc stream goes over QUIC on 127.0.0.1 with a throw-away self-signed certificate
that the receiver pins by its fingerprint. Once the receiver has its first frame it sends the
sender a command, the sender answers it with one of its own, and the receiver reads
QuicNaluMeta (sequence number, sender and arrival times, flags) from every buffer. After
FRAMES buffers and both commands the application ends the stream. It prints what it saw and
exits non-zero when anything it expects does not happen.

    GST_PLUGIN_PATH=target/release python3 examples/app.py [FRAMES]

Needs python3-gi and gir1.2-gstreamer-1.0 (scripts/install-deps.sh installs them).
"""

import sys
import threading

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

KEYFRAME, DISCONT, GAP, LATE = 1, 2, 4, 8
FLAG_NAMES = ((KEYFRAME, "keyframe"), (DISCONT, "discont"), (GAP, "gap"), (LATE, "late"))
TIMEOUT_S = 60  # a bound on a run that normally takes a few seconds, never a sync point


_say_lock = threading.Lock()


def say(line):
    """Prints one whole line: callbacks print from several threads at once."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def flag_text(flags):
    return "|".join(name for bit, name in FLAG_NAMES if flags & bit) or "none"


class App:
    def __init__(self, frames):
        self.frames = frames
        self.loop = GLib.MainLoop()
        self.lock = threading.Lock()  # callbacks come from streaming and networking threads
        self.metas = []  # (seq, sender-time, arrival-time, flags) per buffer
        self.without_meta = 0
        self.decoded = 0
        self.asked = False
        self.sender_got = None  # the command the sender received
        self.answered = None  # whether the sender's answer was queued
        self.receiver_got = None  # the command the receiver received
        self.ending = False
        self.failure = None

        # The sender: a live encoder, so the application decides when the stream ends.
        self.sender = Gst.parse_launch(
            "videotestsrc is-live=true pattern=ball ! "
            "video/x-raw,width=320,height=240,framerate=30/1 ! "
            "x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 ! h265parse ! "
            "quicnalusink name=sink address=127.0.0.1 port=0 self-signed=true"
        )
        self.sink = self.sender.get_by_name("sink")
        self.sink.connect("receiver-connected", self.on_receiver_connected)
        self.sink.connect("command-received", self.on_command_received)
        self.watch(self.sender, "sender")

    def watch(self, pipeline, who):
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message, who)

    def start(self):
        # READY -> PAUSED starts the sink: its port and certificate are known from then on.
        if self.sender.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            return self.fail("the sender did not start")
        port = self.sink.get_property("bound-port")
        fingerprint = self.sink.get_property("certificate-fingerprint")
        say(f"sender: listening on 127.0.0.1:{port}, certificate SHA-256 {fingerprint}")

        self.receiver = Gst.parse_launch(
            f"quicnalusrc name=src address=127.0.0.1 port={port} "
            f"certificate-fingerprint={fingerprint} ! "
            "h265parse ! avdec_h265 name=dec ! fakesink"
        )
        self.src = self.receiver.get_by_name("src")
        self.src.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self.on_received)
        self.receiver.get_by_name("dec").get_static_pad("src").add_probe(
            Gst.PadProbeType.BUFFER, self.on_decoded
        )
        self.watch(self.receiver, "receiver")
        if self.receiver.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            return self.fail("the receiver did not start")
        GLib.timeout_add_seconds(TIMEOUT_S, self.on_timeout)

    # Sender side: signals from quicnalusink's networking thread; return quickly.

    def on_receiver_connected(self, sink, receiver_id, address):
        say(f"sender: receiver {receiver_id} connected from {address}")

    def on_command_received(self, sink, receiver_id, command):
        say(f"sender: command from receiver {receiver_id}: {command.to_string()}")
        answer = Gst.Structure.new_from_string(
            f"pong, n=(int){command.get_value('n')}, text=(string)hello"
        )
        sent = sink.emit("send-command", receiver_id, answer)
        say(f"sender: answered receiver {receiver_id}: {answer.to_string()} (queued: {sent})")
        with self.lock:
            self.sender_got = command.to_string()
            self.answered = sent
        GLib.idle_add(self.check)

    # Receiver side.

    def on_received(self, pad, info):
        buffer = info.get_buffer()
        meta = buffer.get_custom_meta("QuicNaluMeta")
        with self.lock:
            if meta is None:
                self.without_meta += 1
                return Gst.PadProbeReturn.OK
            s = meta.get_structure()
            fields = tuple(s.get_value(f) for f in ("seq", "sender-time", "arrival-time", "flags"))
            self.metas.append(fields)
            first = len(self.metas) == 1
        if first:
            seq, sent, arrived, flags = fields
            say(
                f"receiver: first buffer: seq={seq} sender-time={sent} arrival-time={arrived} "
                f"flags={flag_text(flags)}"
            )
            # A command to the sender: emit the action signal with a GstStructure.
            ask = Gst.Structure.new_from_string("ping, n=(int)1")
            say(f"receiver: sending command {ask.to_string()}")
            sent_ok = self.src.emit("send-command", ask)
            with self.lock:
                self.asked = sent_ok
        GLib.idle_add(self.check)
        return Gst.PadProbeReturn.OK

    def on_decoded(self, pad, info):
        with self.lock:
            self.decoded += 1
        return Gst.PadProbeReturn.OK

    def on_message(self, bus, message, who):
        t = message.type
        if t == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            self.fail(f"{who} error: {err.message} ({debug})")
        elif t == Gst.MessageType.EOS and who == "receiver":
            say("receiver: end of stream")
            self.loop.quit()
        elif t == Gst.MessageType.ELEMENT and who == "receiver":
            s = message.get_structure()
            if s.get_name() == "quicnalusrc-command":
                command = s.get_value("command")
                say(f"receiver: command from sender: {command.to_string()}")
                with self.lock:
                    self.receiver_got = command.to_string()
                self.check()

    def check(self):
        """Ends the stream once everything expected happened (on the main loop)."""
        with self.lock:
            done = (
                len(self.metas) >= self.frames
                and self.sender_got is not None
                and self.receiver_got is not None
            )
        if done and not self.ending:
            self.ending = True
            say(f"sender: {self.frames} frames read and both commands through: ending the stream")
            self.sender.send_event(Gst.Event.new_eos())
        return GLib.SOURCE_REMOVE

    def on_timeout(self):
        self.fail(f"not finished within {TIMEOUT_S} s")
        return GLib.SOURCE_REMOVE

    def fail(self, why):
        if self.failure is None:
            self.failure = why
        self.loop.quit()

    def verdict(self):
        """What went wrong, or None."""
        with self.lock:
            metas, problems = list(self.metas), []
            if self.failure:
                problems.append(self.failure)
            if not self.asked:
                problems.append("the receiver could not send its command")
            if self.sender_got is None or not self.sender_got.startswith("ping"):
                problems.append(f"the sender got {self.sender_got!r}, not the ping")
            if not self.answered:
                problems.append("the sender could not send its answer")
            if self.receiver_got is None or not self.receiver_got.startswith("pong"):
                problems.append(f"the receiver got {self.receiver_got!r}, not the pong")
            if self.without_meta:
                problems.append(f"{self.without_meta} buffers without QuicNaluMeta")
            if self.decoded == 0:
                problems.append("nothing decoded")
        if len(metas) < self.frames:
            problems.append(f"{len(metas)} buffers with QuicNaluMeta, expected {self.frames}")
        if metas and not metas[0][3] & KEYFRAME:
            problems.append("the first buffer is not a keyframe")
        seqs = [m[0] for m in metas]
        if any(b <= a for a, b in zip(seqs, seqs[1:])):
            problems.append("sequence numbers do not increase")
        if any(arrived < sent for _, sent, arrived, _ in metas):
            problems.append("a frame arrived before it was sent (clocks differ?)")
        return problems

    def report(self):
        with self.lock:
            metas, decoded = list(self.metas), self.decoded
        if metas:
            latencies = sorted((arrived - sent) / 1e6 for _, sent, arrived, _ in metas)
            keyframes = sum(1 for m in metas if m[3] & KEYFRAME)
            gaps = sum(1 for m in metas if m[3] & GAP)
            say(
                f"receiver: {len(metas)} buffers with QuicNaluMeta, "
                f"seq {metas[0][0]}..{metas[-1][0]}, {keyframes} keyframes, {gaps} after a gap; "
                f"latency p50 {latencies[len(latencies) // 2]:.2f} ms, max {latencies[-1]:.2f} ms"
            )
        say(f"receiver: {decoded} pictures decoded")


def main():
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    Gst.init(None)
    if Gst.ElementFactory.find("quicnalusink") is None:
        say("quicnalusink not found: install the plugin (make install) or set GST_PLUGIN_PATH")
        return 1
    app = App(frames)
    app.start()
    if app.failure is None:
        app.loop.run()
    for pipeline in (app.sender, getattr(app, "receiver", None)):
        if pipeline is not None:
            pipeline.set_state(Gst.State.NULL)
    app.report()
    problems = app.verdict()
    for p in problems:
        say(f"FAILED: {p}")
    say("result: OK" if not problems else "result: FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
