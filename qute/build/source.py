"""What a build embeds: the model and its inputs, from a run directory, an int8 .tflite, or the
embedded default (firmware/default); streams of ID and corrupted test images for qute monitor."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qute.build.manifest import INPUTS_FILE, MODEL_FILE
from qute.data import CORRUPTIONS, SEVERITIES, corrupt, load_dataset
from qute.errors import QuteError
from qute.int8_model import read_graph
from qute.resources import firmware_dir
from qute.run import load_run
from qute.tf_loader import load_tensorflow


DEFAULT_SAMPLES = 50
RANDOM_SEED = 0


@dataclass
class ModelSource:
    tflite: bytes
    origin: str  # what the model is, for people
    inputs: np.ndarray  # int8 (N, *input shape without batch)
    labels: np.ndarray  # int64 (N,), -1 where unknown
    inputs_from: str  # where the inputs come from, for people
    class_names: list[str] | None = None
    run_dir: Path | None = None  # a run's directory (its calibration.json is compiled in)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool(np.all(self.labels >= 0))


def default_dir() -> Path:
    return firmware_dir() / "default"


def read_default(samples: int) -> ModelSource:
    folder = default_dir()
    about = json.loads((folder / "about.json").read_text())
    with np.load(folder / INPUTS_FILE) as z:
        x, y = z["x"], z["y"]
    return ModelSource(
        tflite=(folder / MODEL_FILE).read_bytes(),
        origin=f"the embedded default model ({about['description']})",
        inputs=x[:samples],
        labels=y[:samples].astype(np.int64),
        inputs_from=f"{about['dataset']} test split, first {min(samples, len(x))} of {len(x)} images",
        class_names=about.get("class_names"),
    )


def parse_stream(spec: str) -> list[tuple[str, int] | None]:
    """``id,corrupt:NAME[:SEVERITY]`` -> [None, (NAME, SEVERITY)]: None is an ID part (severity 5 by default)."""
    parts = []
    for item in str(spec).split(","):
        item = item.strip()
        bits = item.split(":")
        if item == "id":
            parts.append(None)
        elif bits[0] == "corrupt" and len(bits) in (2, 3) and bits[1]:
            if bits[1] not in CORRUPTIONS:
                raise QuteError(f"--stream: unknown corruption {bits[1]!r}; choose one of {', '.join(CORRUPTIONS)}")
            try:
                sev = int(bits[2]) if len(bits) == 3 else 5
            except ValueError:
                sev = -1
            if sev not in SEVERITIES:
                raise QuteError(f"--stream: severity must be one of {', '.join(map(str, SEVERITIES))}, got {bits[2]!r}")
            parts.append((bits[1], sev))
        else:
            raise QuteError(f"--stream: bad part {item!r}; expected id or corrupt:NAME[:SEVERITY], e.g. id,corrupt:gaussian_noise:5")
    return parts


def check_stream(spec: str, samples: int, test_images: int | None) -> list[tuple[str, int] | None]:
    """The parts of a --stream, once `samples` images per part are known to fit the test split."""
    parts = parse_stream(spec)
    if test_images is not None and samples * len(parts) > test_images:
        raise QuteError(f"--stream needs {samples} test images per part, {samples * len(parts)} in all; "
                        f"the test split has {test_images}: give fewer --samples")
    return parts


def _stream_inputs(x: np.ndarray, y: np.ndarray, spec: str, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """`samples` consecutive test images per part of the stream, corrupted where the part says."""
    parts = check_stream(spec, samples, len(x))
    xs, ys, about = [], [], []
    for i, part in enumerate(parts):
        xi, yi = x[i * samples:(i + 1) * samples], y[i * samples:(i + 1) * samples]
        if part is not None:
            xi = corrupt(xi, part[0], part[1], seed=seed + i)
        xs.append(xi)
        ys.append(yi)
        about.append(f"{i * samples}..{(i + 1) * samples - 1}: " + ("ID" if part is None else f"{part[0]} severity {part[1]}"))
    return np.concatenate(xs), np.concatenate(ys), "stream of test images " + ", ".join(about)


def _from_run(path: Path, samples: int, data_dir, progress, stream: str | None = None) -> ModelSource:
    from qute.quantize import TFLITE_FILE, input_params, quantize

    run = load_run(path)
    if stream:  # before quantizing, which takes a while
        check_stream(stream, samples, run.dataset.get("test_samples"))
    tfl = path / TFLITE_FILE
    if not tfl.is_file():
        progress(f"{path} has no {TFLITE_FILE}: quantizing it first (qute quantize {path})")
        from qute.quantize import quantize_run, write_result

        load_tensorflow()
        write_result(path, quantize_run(run, data_dir=data_dir, progress=lambda s: progress("  " + s)))

    t = run.train
    data = load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    tflite = tfl.read_bytes()
    if stream:
        xf, yf, about = _stream_inputs(data.x_test, data.y_test, stream, samples, t.seed)
        about = f"{data.name} {about}"
    else:
        n = min(samples, len(data.x_test))
        xf, yf, about = data.x_test[:n], data.y_test[:n], f"{data.name} test split, first {n} of {len(data.x_test)} images"
    x = quantize(xf, input_params(tflite))
    return ModelSource(
        tflite=tflite,
        origin=f"{path} ({run.spec.method}, {run.spec.arch}, K={run.spec.num_heads}, {data.name})",
        inputs=x,
        labels=np.asarray(yf, dtype=np.int64),
        inputs_from=about,
        class_names=list(data.class_names) if data.class_names else None,
        run_dir=path,
    )


def _from_tflite(path: Path, samples: int) -> ModelSource:
    from qute import oracle

    tflite = path.read_bytes()
    read_graph(tflite, str(path))
    try:
        x = oracle.random_inputs(tflite, samples, RANDOM_SEED)
    except ValueError as e:
        raise QuteError(f"{path}: {e}") from None
    return ModelSource(
        tflite=tflite,
        origin=str(path),
        inputs=x[0],
        labels=np.full(samples, -1, dtype=np.int64),
        inputs_from=f"{samples} uniform random int8 inputs (seed {RANDOM_SEED}; no labels)",
    )


def resolve_model(model: str | None, samples: int, data_dir=None,
                  progress: Callable[[str], None] = lambda s: None, stream: str | None = None) -> ModelSource:
    """The model to build and the inputs to embed (see the module docstring); `model` None: the
    embedded default."""
    if model is None:
        if stream:
            raise QuteError("--stream needs a run directory (its test images are what the stream is made of)")
        return read_default(samples)
    path = Path(model)
    from qute.quantize import TFLITE_FILE

    if path.is_file() and path.name == TFLITE_FILE and (path.parent / "config.json").is_file():
        path = path.parent  # a run's own model: use the run (labels, test images)
    if path.is_dir():
        return _from_run(path, samples, data_dir, progress, stream)
    if stream:
        raise QuteError("--stream needs a run directory (its test images are what the stream is made of)")
    if path.is_file():
        return _from_tflite(path, samples)
    raise QuteError(f"{model} does not exist; give a run directory, an int8 .tflite file, or nothing (the embedded default)")


def write_default(run_dir: str | Path, folder: Path | None = None) -> Path:
    """Replaces the embedded default (firmware/default) with a quantized run: `make default-model`."""
    from qute.quantize import TFLITE_FILE, input_params, quantize

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    tflite = (run_dir / TFLITE_FILE).read_bytes()
    t = run.train
    data = load_dataset(t.dataset, t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    folder = Path(folder or default_dir())
    folder.mkdir(parents=True, exist_ok=True)
    x = quantize(data.x_test, input_params(tflite))
    np.savez_compressed(folder / INPUTS_FILE, x=x, y=np.asarray(data.y_test, dtype=np.int16))
    (folder / MODEL_FILE).write_bytes(tflite)
    report = json.loads((run_dir / "quantization.json").read_text()) if (run_dir / "quantization.json").is_file() else {}
    about = {
        "description": f"{data.name} {run.spec.method.upper() if run.spec.method == 'qute' else run.spec.method}, "
                       f"{run.spec.arch} {','.join(map(str, run.spec.filters))}, K={run.spec.num_heads}",
        "made_by": f"qute train --dataset {t.dataset} --method {t.method} -K {t.k} ; qute quantize (make default-model)",
        "dataset": data.name,
        "class_names": list(data.class_names) if data.class_names else None,
        "test_images": len(x),
        "tflite_sha256": hashlib.sha256(tflite).hexdigest(),
        "int8_test_accuracy": report.get("stages", {}).get("int8_tflm", {}).get("accuracy"),
        "train": t.to_dict(),
    }
    (folder / "about.json").write_text(json.dumps(about, indent=2) + "\n")
    return folder
