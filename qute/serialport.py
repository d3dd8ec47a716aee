"""``qute run --port``: a build's firmware on a real board, read (and fed) over its serial port.

POSIX ttys only (Linux, macOS: ``/dev/ttyACM0``, ``/dev/ttyUSB0``, ``/dev/cu.usbmodem*``), set raw
at the board's console baud rate (8N1, no flow control).

* A build with embedded inputs prints its transcript once after reset: the host opens the port,
  asks for a reset, and reads from the next ``QUTE start`` line to its ``QUTE done`` line.
* A ``--inputs uart`` build waits for its inputs. Its ``QUTE ready`` line may have gone out
  before the port was opened, so the host waits for it briefly and then sends anyway (the
  firmware skips whatever precedes ``QUTI``). A UART without flow control overruns if bytes
  arrive while the firmware is busy with an inference, so the inputs go one frame at a time,
  each after the previous one's sample line has come back.
"""

from __future__ import annotations

import os
import re
import select
import termios
import time
import tty
from collections.abc import Callable

from qute.errors import QuteError, RunFailure

READY_WAIT = 2.0  # seconds to wait for "QUTE ready" before sending regardless


class Port:
    """A raw serial tty; bytes in and out, with deadlines."""

    def __init__(self, path: str, baud: int):
        speed = getattr(termios, f"B{baud}", None)
        if speed is None:
            raise QuteError(f"unsupported --baud {baud}; use a standard rate such as 115200")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError as e:
            raise QuteError(f"cannot open {path}: {e.strerror}; is the board connected "
                            f"(ls /dev/ttyACM* /dev/ttyUSB*) and the port yours (group dialout)?") from None
        try:
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[4] = attrs[5] = speed
            attrs[2] = (attrs[2] & ~(termios.CSTOPB | termios.PARENB | getattr(termios, "CRTSCTS", 0))) | termios.CLOCAL | termios.CREAD
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            termios.tcflush(self.fd, termios.TCIOFLUSH)
        except termios.error as e:
            os.close(self.fd)
            raise QuteError(f"{path} is not a serial port ({e})") from None
        self.path = path
        self.received = b""

    def close(self) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def read_until(self, done: Callable[[bytes], bool], deadline: float) -> bool:
        """Reads into self.received until done(self.received) or the deadline; whether done."""
        while not done(self.received):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    self.received += os.read(self.fd, 4096)
                except OSError:  # a pseudo-terminal whose other side is not attached yet
                    time.sleep(0.05)
        return True


def _has_line(pattern: str) -> Callable[[bytes], bool]:
    rx = re.compile(pattern.encode() + rb"[^\n]*\n")
    return lambda b: rx.search(b) is not None


def talk(path: str, baud: int, payload_frames: tuple[bytes, list[bytes]] | None, timeout: float,
         progress: Callable[[str], None] = lambda s: None) -> str:
    """The console text of one run on the board at `path`.

    `payload_frames`: (header, frames) for a --inputs uart build, else None (embedded inputs).
    """
    from qute.emulate import READY_LINE

    deadline = time.monotonic() + timeout
    port = Port(path, baud)
    try:
        if payload_frames is None:
            progress(f"waiting for the firmware on {path}: reset the board (time-out {timeout:g} s)")
            if not port.read_until(_has_line(r"QUTE start "), deadline):
                raise RunFailure(f"no start line from {path} within {timeout:g} s: reset the board after qute flash, "
                                 f"and check the port and --baud")
            port.received = port.received[port.received.index(b"QUTE start "):]  # drop an earlier run's tail
        else:
            header, frames = payload_frames
            if not port.read_until(lambda b: READY_LINE in b, min(deadline, time.monotonic() + READY_WAIT)):
                progress(f"no ready line from {path} (printed before the port was opened?): sending anyway")
            port.write(header)
            for i, frame in enumerate(frames):
                port.write(frame)
                if not port.read_until(_has_line(rf"QUTE sample={i} "), deadline):
                    raise RunFailure(f"the board answered {i} of {len(frames)} inputs on {path} within {timeout:g} s")
        if not port.read_until(_has_line(r"QUTE done "), deadline):
            raise RunFailure(f"no summary line from {path} within {timeout:g} s")
        return port.received.decode("utf-8", "replace")
    finally:
        port.close()
