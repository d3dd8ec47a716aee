"""The device stage of ``qute eval``: the run's int8 model compiled for a board, on any inputs.

One emulator build with ``--inputs uart`` (``qute build``) is made in a temporary folder; each
:meth:`DeviceStage.__call__` sends a batch of images over the UART to that firmware under QEMU
and reads back every head's output bytes. The heads are dequantized exactly as the int8
stage dequantizes TFLite Micro's (:func:`qute.quantize.int8_head_probs`), so when the device's
bytes equal TFLM's, the two stages' metrics are equal to the last bit. Every batch is also run
through TFLM (the oracle) and the bytes that differ are counted, as are the device's own
uncertainty scores (float32 or Q16/Q20) against the host's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qute import emulate
from qute.boards import load_board
from qute.build import build, load_build
from qute.errors import QuteError, RunFailure
from qute.expectation import Expectation, HeadLayout, arithmetic, compare

DEFAULT_BOARD = "nucleo-f746"
BATCH = 2000  # inputs per QEMU session: bounds each time-out and shows progress on big sets
SECONDS_PER_INPUT = 0.2  # time-out budget (the demo model takes ~6 ms per input under QEMU)


@dataclass
class DeviceStats:
    """What the device did over every batch, against the host."""

    board: str = ""
    machine: str = ""
    inputs: int = 0
    bytes_compared: int = 0
    bytes_differing: int = 0
    scores_compared: int = 0
    scores_differing: int = 0
    scores_kind: str = "float32"
    cycles: list[int] = field(default_factory=list)
    counter: str = "instructions"

    @property
    def exact(self) -> bool:
        return self.bytes_differing == 0 and self.scores_differing == 0

    def to_json(self) -> dict:
        c = np.asarray(self.cycles, dtype=np.int64)
        return {
            "board": self.board, "qemu_machine": self.machine, "inputs": self.inputs,
            "output_bytes_compared": self.bytes_compared, "output_bytes_differing_from_tflm": self.bytes_differing,
            "scores_compared": self.scores_compared, "scores_differing_from_host": self.scores_differing,
            "scores_kind": self.scores_kind, "counter": self.counter,
            "per_inference_mean": float(c.mean()) if c.size else None,
        }

    def summary(self) -> str:
        mean = f"; mean {np.mean(self.cycles):,.0f} {self.counter} per inference" if self.cycles else ""
        kind = "integer" if self.scores_kind == "int" else "float32"
        return (f"device: {self.board} firmware on QEMU {self.machine}, {self.inputs:,} inputs over the UART: "
                f"{self.bytes_differing:,} of {self.bytes_compared:,} output bytes differ from TFLite Micro, "
                f"{self.scores_differing:,} of {self.scores_compared:,} {kind} uncertainty scores differ from the host{mean}")


class DeviceStage:
    """x (float model inputs) -> (K, N, C) head probabilities computed by the firmware under QEMU.

    Use as a context manager: the build lives in a temporary folder until the stage is closed.
    """

    def __init__(self, run, board_name: str | None = None, data_dir=None,
                 progress: Callable[[str], None] = lambda s: None):
        from qute.quantize import TFLITE_FILE

        path = Path(run.path) / TFLITE_FILE
        if not path.is_file():
            raise QuteError(f"{run.path} has no {TFLITE_FILE} for the device stage; run: qute quantize {run.path}")
        self.board = load_board(board_name or DEFAULT_BOARD)
        if not self.board.qemu_machine:
            raise QuteError(f"{self.board.name} has no QEMU machine to emulate it; choose a board that qute boards "
                            f"lists with an emulator")
        self.run = run
        self.tflite = path.read_bytes()
        self.progress = progress
        self.data_dir = data_dir
        self.stats = DeviceStats(board=self.board.name)
        self._tmp: Path | None = None
        self._build = None

    def __enter__(self) -> DeviceStage:
        self._tmp = Path(tempfile.mkdtemp(prefix="qute-device-"))
        try:
            self.progress(f"building {self.run.path} for {self.board.name} (emulator variant, inputs over the UART)")
            build(self.board.name, str(self.run.path), self._tmp / "build", samples=1, emulator=True,
                  data_dir=self.data_dir, inputs="uart")
            self._build = load_build(self._tmp / "build")
        except BaseException:
            self.close()
            raise
        if self._build.tflite() != self.tflite:
            self.close()
            raise QuteError(f"{self.run.path}: the build's model is not the run's {len(self.tflite):,}-byte int8 model")
        m = self._build.manifest
        self.stats.machine = m.qemu_machine or self.board.qemu_machine
        path = arithmetic(HeadLayout.from_manifest(m), m.uncertainty_path)
        self.stats.scores_kind = path.kind if path else "float32"
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from qute.quantize import heads_from_outputs, input_params, output_heads, output_params, quantize

        if self._build is None:
            raise RuntimeError("DeviceStage is used outside its with-block")
        xq = quantize(x, input_params(self.tflite))
        outs = None
        for start in range(0, len(xq), BATCH):
            part = self._batch(xq[start:start + BATCH], start, len(xq))
            outs = part if outs is None else [np.concatenate([a, b]) for a, b in zip(outs, part)]
        k = self.run.spec.num_heads
        return heads_from_outputs(outs, output_heads(self.tflite, k), output_params(self.tflite, k))

    def _batch(self, xq: np.ndarray, start: int, total: int) -> list[np.ndarray]:
        """Runs one batch; its outputs indexed like the flatbuffer's (as TFLM's are)."""
        n = len(xq)
        if total > BATCH:
            self.progress(f"inputs {start + 1:,}-{start + n:,} of {total:,}")
        # looked up on the module at each call, so that a test can put a faulty firmware in its place
        _text, t = emulate.execute(self._build, self.board, xq, None, timeout=60 + SECONDS_PER_INPUT * n)
        if len(t.samples) != n or [s.index for s in t.samples] != list(range(n)):
            raise RunFailure(f"the firmware answered {len(t.samples)} of {n} inputs")
        self.stats.counter = (t.start or {}).get("counter", self.stats.counter)
        c = compare(t.samples, Expectation.from_build(self._build, xq))
        self.stats.bytes_compared += c.bytes_compared
        self.stats.bytes_differing += c.bytes_differing
        self.stats.scores_compared += c.scores_compared
        self.stats.scores_differing += c.scores_differing
        self.stats.inputs += n
        self.stats.cycles.extend(int(s.cycles) for s in t.samples)
        by_index = {o["flatbuffer_index"]: h for o, h in zip(self._build.manifest.outputs, c.device_heads)}
        return [by_index[i] for i in range(len(by_index))]  # every output of the graph is listed in the manifest
