"""A run directory: what `qute train` writes and every later stage reads.

    RUN_DIR/
      model.keras         the inference graph: input -> backbone -> K softmax heads head_0..head_{K-1}
      exits.keras         qute: the same graph with the early exits exit_0..exit_{K-1} kept as
                          outputs after the heads (for early-exit inference, qute quantize --exits)
      config.json         training settings, network spec, dataset description
      normalisation.json  raw input -> model input (later stages quantize exactly what the model saw)
      history.json        one record per epoch

Runs are written into a staging folder beside RUN_DIR and renamed into place, so an interrupted or
failed `qute train` never leaves a half-written RUN_DIR behind; the rules for replacing one are
codegen.outdir's (a run carries its marker file, .qute-run).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from codegen import outdir
from qute import __version__
from qute.config import NetSpec, TrainConfig
from qute.data import Normalisation
from qute.errors import QuteError

MODEL_FILE = "model.keras"
EXITS_FILE = "exits.keras"
FILES = (MODEL_FILE, "config.json", "normalisation.json", "history.json")


@dataclass
class Run:
    path: Path
    train: TrainConfig
    spec: NetSpec
    normalisation: Normalisation
    dataset: dict
    history: list

    def check_exits(self) -> None:
        """Raises the one-line error for a run without early exits (before any long work)."""
        if not (self.path / EXITS_FILE).is_file():
            why = "it was trained before qute kept them" if self.spec.method == "qute" else f"{self.spec.method} has none"
            raise QuteError(f"{self.path} has no early exits ({why}); train a qute model with qute train to get them")

    def load_model(self, exits: bool = False):
        """The inference graph; with `exits`, the one with the early exits kept (exits.keras)."""
        import keras

        if exits:
            self.check_exits()
        path = self.path / (EXITS_FILE if exits else MODEL_FILE)
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as e:  # a damaged model file is bad input, not a crash
            raise QuteError(f"{path} could not be loaded ({type(e).__name__}: {e}); re-run qute train") from None


def _older_run(folder: Path) -> bool:
    """A run written before runs carried a marker: the two files only qute train writes together."""
    return (folder / MODEL_FILE).is_file() and (folder / "config.json").is_file()


RUN = outdir.Kind("qute train", ".qute-run", _older_run)


def write_atomic(files: dict[Path, bytes]) -> None:
    """Writes every file to a temporary sibling first, then renames them all into place."""
    staged = []
    try:
        for path, data in files.items():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            staged.append((tmp, path))
            with open(tmp, "xb") as f:  # not mkstemp: the file gets the usual umask permissions
                f.write(data)
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as e:  # a read-only or full disk is the user's to fix, in one line
        raise QuteError(f"cannot write {path} ({e.strerror})") from None
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_run(folder: Path, cfg: TrainConfig, spec: NetSpec, data, model, history: list,
             temperature: dict | None = None, exits_model=None) -> None:
    """Writes a run's files into `folder` (normally a `staging` folder); `exits_model` is the
    inference graph with the early exits kept (qute.train.TrainResult.exits_model)."""
    model.save(folder / MODEL_FILE)
    if exits_model is not None:
        exits_model.save(folder / EXITS_FILE)
    dataset = {
        "name": data.name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names) if data.class_names else None,
        "train_samples": int(len(data.x_train)),
        "val_samples": int(len(data.x_val)),
        "test_samples": int(len(data.x_test)),
    }
    write_json(
        folder / "config.json",
        {
            "qute_version": __version__,
            "train": cfg.to_dict(),
            "spec": spec.to_dict(),
            "dataset": dataset,
            "heads": [f"head_{i}" for i in range(spec.num_heads)],
            "exits": [f"exit_{i}" for i in range(spec.k)] if exits_model is not None else [],
            "params": int(model.count_params()),
            "temperature": temperature,
        },
    )
    write_json(folder / "normalisation.json", data.normalisation.to_dict())
    write_json(folder / "history.json", history)


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise QuteError(f"run directory {path} {outdir.missing(path)}"
                        + ("" if path.exists() else f"; create one with: qute train -o {path}"))
    missing = [f for f in FILES if not (path / f).exists()]
    if missing:
        raise QuteError(f"{path} is not a complete qute run (missing {', '.join(missing)}); re-run qute train")
    try:
        config = json.loads((path / "config.json").read_text())
        norm = json.loads((path / "normalisation.json").read_text())
        history = json.loads((path / "history.json").read_text())
        return Run(
            path=path,
            train=TrainConfig(**config["train"]),
            spec=NetSpec.from_dict(config["spec"]),
            normalisation=Normalisation.from_dict(norm),
            dataset=config["dataset"],
            history=history,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise QuteError(f"{path}: damaged run files ({type(e).__name__}: {e}); re-run qute train") from None
