"""Generated C against the oracle, byte for byte.

The generated C is compiled on the host with the project's warning flags (and optionally
AddressSanitizer and UBSan), run on the given inputs, and every output byte is compared with the
reference: TFLite Micro's reference kernels through the tflite-micro interpreter, or LiteRT's
reference kernels where TFLM cannot be trusted on the model (see `qute.oracle.reference`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen.fold import fold
from codegen.host import HostCompileError, HostRunError, build_host
from codegen.ir import CodegenError
from codegen.reader import read_model
from codegen.report import shape_lines
from qute import oracle
from qute.data import load_dataset
from qute.errors import QuteError, RunFailure
from qute.int8_model import TFLITE_FILE, input_params, quantize
from qute.run import load_run

REFERENCES = {
    "tflm": "TFLite Micro reference kernels (tflite-micro interpreter, run twice, identical)",
    "litert-ref": "LiteRT reference kernels (TFLite Micro is not trustworthy on this model)",
}
# why TFLite Micro was not trusted, when it was not
_WHY = {
    True: "LiteRT reference kernels (TFLite Micro runs on the model's stored shapes, which are wrong)",
    False: "LiteRT reference kernels (two TFLite Micro runs gave different bytes)",
}


@dataclass
class VerifyResult:
    samples: int
    reference: str  # "tflm" or "litert-ref"
    mismatches: int
    total: int
    per_output: list[dict] = field(default_factory=list)  # name, mismatches, bytes
    outputs: list[np.ndarray] = field(default_factory=list)  # ours, in flatbuffer output order
    sanitized: bool = False
    shape_notes: list[str] = field(default_factory=list)  # stored shapes that disagree with the inferred ones

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def summary(self) -> str:
        which = REFERENCES["tflm"] if self.reference == "tflm" else _WHY[bool(self.shape_notes)]
        text = f"mismatching bytes: {self.mismatches:,} of {self.total:,} ({self.samples} inputs; reference: {which})"
        if self.reference == "litert-ref" and not self.shape_notes:
            # the C follows TFLM's kernels here (nothing tells the generator TFLM is unfit), and
            # they differ from LiteRT's on RELU6 and some FULLY_CONNECTED rounding
            text += "; the generated C follows TFLite Micro's kernels"
        return text


def shape_notes(tflite: bytes) -> list[str]:
    """Lines for stored shapes that disagree with codegen's inferred ones (none when all agree)."""
    try:
        return shape_lines(fold(read_model(tflite)).shape_notes)
    except CodegenError as e:
        raise QuteError(str(e)) from None


def compile_model(tflite: bytes, folder: Path | None = None, sanitize: bool = False):
    """The model's generated C compiled for the host (codegen errors become QuteError)."""
    try:
        return build_host(read_model(tflite), folder, sanitize=sanitize)
    except HostCompileError as e:
        raise RunFailure(f"{e}\nThis is a bug in qute, not in the model; please report it with the model") from None
    except CodegenError as e:
        raise QuteError(str(e)) from None


def run_c(tflite: bytes, inputs: list[np.ndarray], sanitize: bool = False, host=None) -> list[np.ndarray]:
    """Our outputs for `inputs` (one array per model input, N samples), in flatbuffer output order."""
    graph = read_model(tflite)
    with tempfile.TemporaryDirectory(prefix="qute-verify-") as tmp:
        host = host or compile_model(tflite, Path(tmp), sanitize)
        try:
            ours = host.run(inputs)
        except HostRunError as e:
            # the model passed every check and the C compiled: what fails now is qute's own code
            what = (f"failed under AddressSanitizer/UBSan: {e.sanitizer}" if e.sanitizer
                    else f"crashed: {str(e).splitlines()[0]}")
            raise RunFailure(f"the generated C {what}. This is a bug in qute, not in the model; "
                             "please report it with the model") from None
    by_tensor = dict(zip(host.output_tensors, ours))
    return [by_tensor[t] for t in graph.outputs]


def verify(tflite: bytes, inputs: list[np.ndarray], sanitize: bool = False) -> VerifyResult:
    ours = run_c(tflite, inputs, sanitize)
    ref, which = oracle.reference(tflite, inputs)
    graph = read_model(tflite)
    per_output = []
    for t, a, b in zip(graph.outputs, ours, ref):
        a, b = np.asarray(a).reshape(len(inputs[0]), -1), np.asarray(b).reshape(len(inputs[0]), -1)
        if a.shape != b.shape or a.dtype != b.dtype:
            raise QuteError(f"output {graph.output_label(t)}: our {a.dtype} {a.shape} differs from the reference's "
                            f"{b.dtype} {b.shape}")
        a, b = np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)  # int16 outputs: 2 bytes each
        per_output.append({"name": graph.output_label(t), "mismatches": int(np.sum(a != b)), "bytes": int(a.size)})
    return VerifyResult(
        shape_notes=oracle.tflm_shape_problems(tflite),
        samples=len(inputs[0]),
        reference=which,
        mismatches=sum(p["mismatches"] for p in per_output),
        total=sum(p["bytes"] for p in per_output),
        per_output=per_output,
        outputs=ours,
        sanitized=sanitize,
    )


def model_inputs(tflite: bytes, random: int, seed: int = 0, data: np.ndarray | None = None) -> list[np.ndarray]:
    """`random` uniform int8 samples per model input, followed by `data` (int8, N x input) if given."""
    try:
        xs = oracle.random_inputs(tflite, random, seed) if random else None
    except ValueError as e:  # an input without a leading batch of 1 has no (N, ...) convention
        raise QuteError(f"cannot draw random inputs for this model: {e}") from None
    if data is None:
        if xs is None:
            raise QuteError("no inputs to verify on: give --samples above 0")
        return xs
    if len(oracle.model_io(tflite)[0]) != 1:
        raise QuteError("dataset inputs need a single-input model")
    data = np.asarray(data, np.int8)
    return [data if xs is None else np.concatenate([xs[0], data.reshape((len(data),) + xs[0].shape[1:])])]


def load_target(model: str | Path, random: int, seed: int = 0, data_dir=None):
    """What `qute verify MODEL` checks: (path, the .tflite bytes, the inputs, the test images or None).

    MODEL is an int8 .tflite file (`random` random inputs) or a run directory (its quantized model,
    on `random` random inputs followed by as many of its test images).
    """
    path, data = Path(model), None
    if path.is_dir():
        run = load_run(path)
        path = path / TFLITE_FILE
        if not path.is_file():
            raise QuteError(f"{model} has no {TFLITE_FILE}; run: qute quantize {model}")
        t = run.train
        dataset = load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
        data = quantize(dataset.x_test[:random], input_params(path.read_bytes()))
    elif not path.is_file():
        raise QuteError(f"{model} does not exist; give an int8 .tflite file or a run directory")
    tflite = path.read_bytes()
    read_model(tflite, str(path))  # a damaged file fails here, with its name
    return path, tflite, model_inputs(tflite, random, seed, data), data
