"""``qute run --port``: a build's firmware on a real board, read (and fed) over its serial port.

Through pyserial, so any port it opens works (Linux ``/dev/ttyACM0``, macOS
``/dev/cu.usbmodem*``, Windows ``COM3``), raw at the board's console baud rate (8N1, no flow
control).

* A build with embedded inputs prints its transcript once after reset: the host opens the port,
  asks for a reset, and reads from the next ``QUTE start`` line to its ``QUTE done`` line.
* A ``--inputs uart`` build waits for its inputs. Its ``QUTE ready`` line may have gone out
  before the port was opened, so the host waits for it briefly and then sends anyway (the
  firmware skips whatever precedes ``QUTI``). A UART without flow control overruns if bytes
  arrive while the firmware is busy with an inference, so the inputs go one frame at a time,
  each after the previous one's sample line has come back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import serial

from qute.errors import QuteError, RunFailure
from qute.transcript import READY_LINE

READY_WAIT = 2.0  # seconds to wait for "QUTE ready" before sending regardless


class Port:
    """A raw serial port; bytes in and out, with deadlines."""

    def __init__(self, path: str, baud: int):
        if baud not in serial.Serial.BAUDRATES:
            raise QuteError(f"unsupported --baud {baud}; use a standard rate such as 115200")
        try:
            self.port = serial.Serial(path, baud, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
                                      stopbits=serial.STOPBITS_ONE, timeout=0, rtscts=False, xonxoff=False)
        except serial.SerialException as e:
            if e.errno is None:  # opened, but the line settings do not apply: not a serial port
                raise QuteError(f"{path} is not a serial port ({e})") from None
            raise QuteError(f"cannot open {path}: {e.strerror or e}; is the board connected "
                            f"(ls /dev/ttyACM* /dev/ttyUSB*, or COM ports on Windows) and the port yours "
                            f"(group dialout)?") from None
        self.port.reset_input_buffer()
        self.path = path
        self.received = b""

    def close(self) -> None:
        self.port.close()

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read_until(self, done: Callable[[bytes], bool], deadline: float) -> bool:
        """Reads into self.received until done(self.received) or the deadline; whether done."""
        while not done(self.received):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.port.timeout = min(left, 0.2)
            try:
                self.received += self.port.read(max(1, self.port.in_waiting))
            except serial.SerialException:  # a pseudo-terminal whose other side is not attached yet
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
