"""The named datasets, Normalisation and Dataset, npz datasets, loading and splitting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qute.data.images import seed_seq
from qute.data.sources import NPZ_REQUIRED, as_images, as_labels, load_raw, read_npz
from qute.errors import QuteError

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn")

_DIGIT_NAMES = tuple(str(i) for i in range(10))
_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": _DIGIT_NAMES,
    "mnist": _DIGIT_NAMES,
    "svhn": _DIGIT_NAMES,
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}


# --------------------------------------------------------------------------- #
# Normalisation and Dataset
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Normalisation:
    """``model_input = raw * scale + offset``; raw values span [raw_min, raw_max]."""

    scale: float
    offset: float
    raw_min: float
    raw_max: float

    @classmethod
    def from_range(cls, raw_min: float, raw_max: float) -> "Normalisation":
        """The map taking [raw_min, raw_max] onto [0, 1]."""
        raw_min, raw_max = float(raw_min), float(raw_max)
        if not (np.isfinite(raw_min) and np.isfinite(raw_max)) or raw_max <= raw_min:
            raise QuteError(
                f"cannot normalise raw values in [{raw_min}, {raw_max}]: need finite raw_min < raw_max"
            )
        scale = 1.0 / (raw_max - raw_min)
        return cls(scale=scale, offset=-raw_min * scale, raw_min=raw_min, raw_max=raw_max)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        out = np.asarray(raw, dtype=np.float32) * np.float32(self.scale)
        if self.offset:
            out += np.float32(self.offset)
        return out.astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {
            "scale": float(self.scale),
            "offset": float(self.offset),
            "raw_min": float(self.raw_min),
            "raw_max": float(self.raw_max),
        }

    @classmethod
    def from_dict(cls, d) -> "Normalisation":
        keys = ("scale", "offset", "raw_min", "raw_max")
        if not isinstance(d, dict):
            raise QuteError(f"normalisation must be a mapping with keys {', '.join(keys)}; got {type(d).__name__}")
        missing = [k for k in keys if k not in d]
        if missing:
            raise QuteError(
                f"normalisation is missing {', '.join(missing)}; it needs {', '.join(keys)}"
            )
        try:
            values = {k: float(d[k]) for k in keys}
        except (TypeError, ValueError):
            raise QuteError(
                "normalisation values must be numbers; got "
                + ", ".join(f"{k}={d[k]!r}" for k in keys)
            ) from None
        if not all(np.isfinite(v) for v in values.values()) or values["scale"] == 0:
            raise QuteError(f"normalisation values must be finite with a non-zero scale; got {values}")
        return cls(**values)


@dataclass(eq=False)
class Dataset:
    """Splits in model-input space (float32 NHWC) with int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    normalisation: Normalisation
    class_names: tuple[str, ...] | None = None
    x_ood: np.ndarray | None = None
    source: str | None = None  # where the files were read from, for logs

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)


# --------------------------------------------------------------------------- #
# npz datasets
# --------------------------------------------------------------------------- #


def _load_npz_dataset(spec: str, seed: int, val_fraction: float, limit: int | None) -> Dataset:
    arg = spec[len("npz:"):].strip()
    if not arg:
        raise QuteError("npz: needs a path, e.g. npz:data/my_set.npz")
    path = Path(arg).expanduser()
    a = read_npz(path, NPZ_REQUIRED, ("x_ood", "num_classes", "class_names"))
    x_train = as_images(a["x_train"], "x_train", path)
    x_test = as_images(a["x_test"], "x_test", path)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise QuteError(
            f"{path}: x_test images are {x_test.shape[1:]} but x_train images are {x_train.shape[1:]}; they must match"
        )
    y_train = as_labels(a["y_train"], "y_train", len(x_train), "x_train", path)
    y_test = as_labels(a["y_test"], "y_test", len(x_test), "x_test", path)
    top = int(max(y_train.max(), y_test.max())) + 1
    if "num_classes" in a:
        nc = np.asarray(a["num_classes"])
        if nc.size != 1 or nc.dtype.kind not in "iu" or int(nc.reshape(-1)[0]) < 2:
            raise QuteError(f"{path}: num_classes must be one integer >= 2; got {nc!r}")
        num_classes = int(nc.reshape(-1)[0])
        if top > num_classes:
            raise QuteError(
                f"{path}: labels go up to {top - 1} but num_classes is {num_classes}; "
                f"expected integer class labels in [0, {num_classes})"
            )
    else:
        num_classes = top
    if num_classes < 2:
        raise QuteError(f"{path}: the labels hold a single class; expected at least 2 classes in [0, C)")
    class_names = None
    if "class_names" in a:
        cn = np.asarray(a["class_names"]).reshape(-1)
        if cn.dtype.kind not in "US" or len(cn) != num_classes:
            raise QuteError(f"{path}: class_names must be {num_classes} strings; got {cn.dtype} of length {len(cn)}")
        class_names = tuple(str(s.decode() if isinstance(s, bytes) else s) for s in cn)

    x_ood = None
    if "x_ood" in a:
        x_ood = as_images(a["x_ood"], "x_ood", path)
        if x_ood.shape[1:] != x_train.shape[1:]:
            raise QuteError(
                f"{path}: x_ood images are {x_ood.shape[1:]} but x_train images are {x_train.shape[1:]}; they must match"
            )

    if x_train.dtype == np.uint8:
        norm = Normalisation(scale=1.0 / 255.0, offset=0.0, raw_min=0.0, raw_max=255.0)
    else:
        lo = float(min(x_train.min(), x_test.min()))
        hi = float(max(x_train.max(), x_test.max()))
        if hi <= lo:
            raise QuteError(f"{path}: every pixel of x_train and x_test equals {lo}; expected images that vary")
        norm = Normalisation.from_range(lo, hi)

    train, val = _split_train_val(x_train, y_train, seed, val_fraction, limit)
    return Dataset(
        name=spec,
        x_train=norm.apply(train[0]),
        y_train=train[1],
        x_val=norm.apply(val[0]),
        y_val=val[1],
        x_test=norm.apply(x_test),
        y_test=y_test,
        num_classes=num_classes,
        normalisation=norm,
        class_names=class_names,
        x_ood=None if x_ood is None else np.clip(norm.apply(x_ood), 0.0, 1.0),
        source=str(path),
    )


# --------------------------------------------------------------------------- #
# Loading and splitting
# --------------------------------------------------------------------------- #


def canonical(name: str) -> str:
    if not isinstance(name, str):
        raise QuteError(f"dataset name must be a string; one of {', '.join(DATASETS)} or npz:PATH")
    s = name.strip()
    if s.lower().startswith("npz:"):
        return "npz:" + s[4:]
    s = s.lower().replace("-", "_")
    return {"cifar_10": "cifar10", "fashionmnist": "fashion_mnist"}.get(s, s)


def _check_split_args(val_fraction, limit):
    try:
        vf = float(val_fraction)
    except (TypeError, ValueError):
        raise QuteError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}") from None
    if not 0.0 <= vf < 1.0:
        raise QuteError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise QuteError(f"limit must be a positive integer number of training samples or None; got {limit!r}")
    return vf


def _split_train_val(x, y, seed, val_fraction, limit):
    """Seeded shuffle; the first ``val_fraction`` goes to validation, ``limit`` caps the rest."""
    n = len(x)
    perm = np.random.default_rng(seed_seq(seed, "split")).permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n - n_val < 1:
        raise QuteError(f"val_fraction {val_fraction} leaves no training samples out of {n}; use a smaller one")
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if limit is not None:
        train_idx = train_idx[: int(limit)]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    limit: int | None = None,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS` or ``npz:PATH``) with seeded splits.

    Validation comes out of the training set; ``limit`` caps the number of
    training samples after the shuffle (val and test are not capped).
    """
    key = canonical(name)
    vf = _check_split_args(val_fraction, limit)
    if key.startswith("npz:"):
        return _load_npz_dataset(key, seed, vf, limit)
    if key not in DATASETS:
        raise QuteError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or npz:PATH")

    if key == "digits":
        return _load_digits(seed, vf, limit)

    train, test, where = load_raw(key, data_dir, need_train=True)
    (x_tr, y_tr), (x_te, y_te) = train, test
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise QuteError(f"{where}: train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}")
    for y, split in ((y_tr, "training"), (y_te, "test")):
        if len(y) == 0 or y.min() < 0 or y.max() >= 10:
            raise QuteError(f"{where}: {split} labels must be class indices in [0, 10); found {sorted(set(y.tolist()))[:12]}")
    norm = Normalisation(scale=1.0 / 255.0, offset=0.0, raw_min=0.0, raw_max=255.0)
    tr, va = _split_train_val(x_tr, y_tr, seed, vf, limit)
    return Dataset(
        name=key,
        x_train=norm.apply(tr[0]),
        y_train=tr[1].astype(np.int64),
        x_val=norm.apply(va[0]),
        y_val=va[1].astype(np.int64),
        x_test=norm.apply(x_te),
        y_test=y_te.astype(np.int64),
        num_classes=10,
        normalisation=norm,
        class_names=_CLASS_NAMES[key],
        source=where,
    )


def digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32)[..., None], d.target.astype(np.int64)


def _load_digits(seed: int, val_fraction: float, limit: int | None, test_fraction: float = 0.2) -> Dataset:
    x, y = digits_raw()
    perm = np.random.default_rng(seed_seq(seed, "digits-test")).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test_idx, rest = perm[:n_test], perm[n_test:]
    tr, va = _split_train_val(x[rest], y[rest], seed, val_fraction, limit)
    norm = Normalisation(scale=1.0 / 16.0, offset=0.0, raw_min=0.0, raw_max=16.0)
    return Dataset(
        name="digits",
        x_train=norm.apply(tr[0]),
        y_train=tr[1],
        x_val=norm.apply(va[0]),
        y_val=va[1],
        x_test=norm.apply(x[test_idx]),
        y_test=y[test_idx],
        num_classes=10,
        normalisation=norm,
        class_names=_CLASS_NAMES["digits"],
        source="sklearn.datasets.load_digits",
    )
