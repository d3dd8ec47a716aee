"""Datasets, corruptions and out-of-distribution sets for QUTE.

Every image set comes out as float32 NHWC in *model-input space*: the raw
values mapped by a :class:`Normalisation` (``raw * scale + offset``) to [0, 1].
Labels are int64.

Where the files come from
    ``digits`` is scikit-learn's bundled 8x8 set and always works offline.
    ``mnist``, ``fashion_mnist``, ``cifar10`` and ``svhn`` are read from the
    data directories (:func:`data_dirs`), then from a few system locations (the
    Keras download cache, Debian's ``dataset-fashion-mnist``), and as a last
    resort downloaded with ``keras.datasets`` when the download host answers.
    ``npz:PATH`` reads arrays ``x_train, y_train, x_test, y_test`` (optional
    ``x_ood``, ``num_classes``, ``class_names``) from a NumPy archive.

Corruptions (:func:`corrupt`) follow the spirit of MNIST-C / CIFAR-10-C and
use only numpy and scipy.ndimage; OOD sets (:func:`load_ood`) are either real
datasets resized to the in-distribution shape or synthetic images.
"""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from qute.errors import QuteError

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "OOD_SYNTHETIC",
    "SEVERITIES",
    "Dataset",
    "Normalisation",
    "corrupt",
    "data_dirs",
    "default_ood",
    "load_dataset",
    "load_ood",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
OOD_SYNTHETIC: tuple[str, ...] = ("noise", "blobs", "stripes")

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

# Folder names accepted under a data directory, first one is the canonical one.
_ALIASES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "fashionmnist"),
    "cifar10": ("cifar10", "cifar-10"),
    "svhn": ("svhn",),
}
_NPZ_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": ("fashion_mnist.npz", "fashion-mnist.npz"),
    "cifar10": ("cifar10.npz", "cifar-10.npz"),
    "svhn": ("svhn.npz",),
}
_WHAT: dict[str, str] = {
    "mnist": "the IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) or mnist.npz",
    "fashion_mnist": "the IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) or fashion_mnist.npz",
    "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch) or cifar10.npz",
    "svhn": "train_32x32.mat and test_32x32.mat, or svhn.npz",
}
_MISSING_TRAIN: dict[str, str] = {
    "mnist": "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]",
    "fashion_mnist": "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]",
    "cifar10": "data_batch_1..data_batch_5",
    "svhn": "train_32x32.mat",
}
# Hosts that keras.datasets downloads from; svhn has no Keras loader.
_KERAS_HOSTS: dict[str, str] = {
    "mnist": "storage.googleapis.com",
    "fashion_mnist": "storage.googleapis.com",
    "cifar10": "www.cs.toronto.edu",
}

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
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
# Where data lives
# --------------------------------------------------------------------------- #


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Data directories to search, in order.

    ``data_dir`` when given (only it); else every entry of ``$QUTE_DATA``
    (``os.pathsep``-separated); else ``../shared/data`` seen from the current
    directory and from the repository root, those that exist.
    """
    if data_dir is not None and str(data_dir) != "":
        return [Path(data_dir).expanduser()]
    env = os.environ.get("QUTE_DATA", "")
    if env.strip():
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    found: list[Path] = []
    for cand in (Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand.is_dir() and all(cand.resolve() != f.resolve() for f in found):
            found.append(cand)
    return found


def _system_dirs(name: str) -> list[Path]:
    """Folders outside the data directories that may hold ``name``.

    The Keras download cache, and for fashion_mnist the Debian package
    ``dataset-fashion-mnist``.  Tests monkeypatch this to ``[]``.
    """
    out: list[Path] = []
    keras_home = os.environ.get("KERAS_HOME")
    cache = Path(keras_home) / "datasets" if keras_home else Path.home() / ".keras" / "datasets"
    out.append(cache)
    out.extend(cache / a for a in _ALIASES.get(name, ()))
    if name == "fashion_mnist":
        share = Path("/usr/share")
        cands = [
            share / "datasets" / "fashion-mnist",  # where dataset-fashion-mnist puts the IDX files
            share / "datasets" / "fashion_mnist",
            share / "dataset-fashion-mnist",
        ]
        cands += sorted(share.glob("*fashion*")) + sorted(share.glob("datasets/*fashion*"))
        for c in list(cands):
            try:
                if c.is_dir():
                    cands.extend(sorted(p for p in c.iterdir() if p.is_dir()))
            except OSError:
                pass
        out.extend(cands)
    seen: set[str] = set()
    unique = []
    for p in out:
        if p.is_dir() and str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    return unique


def _online(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """True when ``host`` accepts a TCP connection; ``$QUTE_OFFLINE`` forces False."""
    if os.environ.get("QUTE_OFFLINE", "").strip() not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- #
# File formats
# --------------------------------------------------------------------------- #


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise QuteError(f"cannot read {path}: {_one_line(e)}") from None


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or not).

    ``magic`` = 2051 expects images (3 dims), 2049 labels (1 dim); a wrong
    magic, an unknown type code or a size that disagrees with the header raises
    :class:`QuteError`.
    """
    path = Path(path)
    raw = _read_bytes(path)
    kind = {_IDX_IMAGES_MAGIC: "image", _IDX_LABELS_MAGIC: "label"}.get(magic or -1, "")
    what = f"an IDX {kind} file".replace("  ", " ")
    if len(raw) < 4:
        raise QuteError(f"{path} is not {what}: only {len(raw)} bytes, shorter than the 4-byte header")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise QuteError(f"{path} is not {what}: magic number {found}, expected {magic}")
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise QuteError(f"{path} is not an IDX file: bad header bytes {raw[:4].hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise QuteError(f"{path} is a truncated IDX file: {len(raw)} bytes, the header alone needs {header}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise QuteError(
            f"{path} is a corrupt IDX file: header says {'x'.join(map(str, dims))} "
            f"({expected} data bytes) but it holds {len(raw) - header}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


class _Source:
    """One place that may hold a dataset's splits."""

    where: Path

    def has(self, split: str) -> bool:  # split: "train" | "test"
        raise NotImplementedError

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _IdxSource(_Source):
    _STEMS = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def __init__(self, folder: Path):
        self.where = folder

    def _file(self, stem: str) -> Path | None:
        for s in (stem, stem.replace("-idx", ".idx")):
            for suffix in (".gz", ""):
                p = self.where / (s + suffix)
                if p.is_file():
                    return p
        return None

    def has(self, split):
        return all(self._file(s) is not None for s in self._STEMS[split])

    def load(self, split):
        img_path, lab_path = (self._file(s) for s in self._STEMS[split])
        x = read_idx(img_path, _IDX_IMAGES_MAGIC)
        y = read_idx(lab_path, _IDX_LABELS_MAGIC)
        if x.ndim != 3:
            raise QuteError(f"{img_path}: IDX images must have 3 dimensions (N, H, W), got {x.ndim}")
        if y.ndim != 1:
            raise QuteError(f"{lab_path}: IDX labels must have 1 dimension (N,), got {y.ndim}")
        if len(x) != len(y):
            raise QuteError(f"{img_path} has {len(x)} images but {lab_path} has {len(y)} labels")
        return x[..., None], y.astype(np.int64)


class _NpzSource(_Source):
    def __init__(self, path: Path):
        self.where = path
        self._keys: set[str] | None = None

    def _available(self) -> set[str]:
        if self._keys is None:
            if not self.where.is_file():
                self._keys = set()
            else:
                try:
                    with np.load(self.where, allow_pickle=False) as z:
                        self._keys = set(z.files)
                except Exception as e:  # noqa: BLE001 - any unreadable archive
                    raise QuteError(f"cannot read {self.where} as a NumPy .npz archive: {_one_line(e)}") from None
        return self._keys

    def has(self, split):
        return {f"x_{split}", f"y_{split}"} <= self._available()

    def load(self, split):
        arrays = _read_npz(self.where, (f"x_{split}", f"y_{split}"))
        x = _as_images(arrays[f"x_{split}"], f"x_{split}", self.where)
        y = _as_labels(arrays[f"y_{split}"], f"y_{split}", len(x), f"x_{split}", self.where)
        return x, y


class _CifarSource(_Source):
    def __init__(self, folder: Path):
        self.where = folder

    def _files(self, split):
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return [self.where / n for n in names]

    def has(self, split):
        return all(p.is_file() for p in self._files(split))

    def load(self, split):
        xs, ys = [], []
        for p in self._files(split):
            try:
                with open(p, "rb") as f:
                    d = pickle.load(f, encoding="bytes")
                data = np.asarray(d[b"data"] if b"data" in d else d["data"], dtype=np.uint8)
                labels = d[b"labels"] if b"labels" in d else d["labels"]
            except Exception as e:  # noqa: BLE001
                raise QuteError(f"cannot read CIFAR-10 batch {p}: {_one_line(e)}") from None
            if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                raise QuteError(
                    f"{p} is not a CIFAR-10 batch: data {data.shape}, {len(labels)} labels; "
                    "expected (N, 3072) uint8 and N labels"
                )
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(labels, dtype=np.int64))
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


class _SvhnSource(_Source):
    def __init__(self, folder: Path):
        self.where = folder

    def has(self, split):
        return (self.where / f"{split}_32x32.mat").is_file()

    def load(self, split):
        import scipy.io

        p = self.where / f"{split}_32x32.mat"
        try:
            m = scipy.io.loadmat(p)
            x, y = m["X"], m["y"]
        except Exception as e:  # noqa: BLE001
            raise QuteError(f"cannot read SVHN file {p} (MATLAB v5 with X and y expected): {_one_line(e)}") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
            raise QuteError(f"{p}: X has shape {x.shape} and y {y.shape}; expected X (32, 32, 3, N) and N labels")
        x = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))).astype(np.uint8)
        y = y.reshape(-1).astype(np.int64)
        y[y == 10] = 0
        return x, y


def _sources(name: str, data_dir) -> tuple[list[_Source], list[Path]]:
    """Candidate sources for a named dataset, in search order, and the places looked in."""
    roots = data_dirs(data_dir)
    folders: list[tuple[Path, bool]] = []  # (folder, may hold IDX files directly)
    for root in roots:
        folders.extend((root / a, True) for a in _ALIASES[name])
        folders.append((root, False))
    extra = _system_dirs(name)
    folders.extend((f, True) for f in extra)

    sources: list[_Source] = []
    for folder, idx_ok in folders:
        if name in ("mnist", "fashion_mnist") and idx_ok:
            sources.append(_IdxSource(folder))
        if name == "cifar10":
            sources.append(_CifarSource(folder / "cifar-10-batches-py"))
            if idx_ok:
                sources.append(_CifarSource(folder))
        if name == "svhn":
            sources.append(_SvhnSource(folder))
        sources.extend(_NpzSource(folder / n) for n in _NPZ_NAMES[name])
    looked = [r / _ALIASES[name][0] for r in roots] + [r for r in roots] + extra
    return sources, looked


def _load_raw(name: str, data_dir, need_train: bool):
    """(train or None, test, where) for a named file-backed dataset, raw uint8 NHWC."""
    sources, looked = _sources(name, data_dir)
    partial: _Source | None = None
    for src in sources:
        if src.has("test") and (not need_train or src.has("train")):
            train = src.load("train") if need_train else None
            return train, src.load("test"), str(src.where)
        if need_train and partial is None and src.has("test"):
            partial = src

    host = _KERAS_HOSTS.get(name)
    if host is not None and _online(host):
        try:
            import keras

            (xt, yt), (xs, ys) = getattr(keras.datasets, name).load_data()
        except Exception as e:  # noqa: BLE001
            raise QuteError(
                f"dataset {name!r} is not in {_places(looked)} and downloading it with keras.datasets failed: "
                f"{_one_line(e)}; provide it with --data-dir or $QUTE_DATA"
            ) from None
        xt, xs = (x[..., None] if x.ndim == 3 else x for x in (xt, xs))
        train = (np.asarray(xt, np.uint8), np.asarray(yt).reshape(-1).astype(np.int64))
        test = (np.asarray(xs, np.uint8), np.asarray(ys).reshape(-1).astype(np.int64))
        return (train if need_train else None), test, f"keras.datasets.{name}"

    offline = " (and no internet for a Keras download)" if host else ""
    if partial is not None:
        raise QuteError(
            f"dataset {name!r}: the training files are missing ({_MISSING_TRAIN[name]}); {partial.where} holds only "
            f"the test files (enough for an OOD set); looked in {_places(looked)}{offline}; put the full set in a "
            f"folder {name}/ under a data directory given with --data-dir or $QUTE_DATA{_DEBIAN_HINT.get(name, '')}"
        )
    raise QuteError(
        f"dataset {name!r} not found: looked for {_WHAT[name]} in {_places(looked)}{offline}; put them in a folder "
        f"{name}/ under a data directory given with --data-dir or $QUTE_DATA{_DEBIAN_HINT.get(name, '')}"
    )


_DEBIAN_HINT = {"fashion_mnist": ", or install the Debian package dataset-fashion-mnist"}


def _places(paths: list[Path]) -> str:
    if not paths:
        return "no data directory (none given, $QUTE_DATA unset, no ../shared/data)"
    seen: list[str] = []
    for p in paths:
        s = str(p) + ("" if p.exists() else " (missing)")
        if s not in seen:
            seen.append(s)
    return ", ".join(seen)


def _available(name: str, data_dir=None) -> bool:
    """Whether the test split of ``name`` can be read locally (no network)."""
    if name == "digits" or name in OOD_SYNTHETIC:
        return True
    if name not in _ALIASES:
        return False
    try:
        sources, _ = _sources(name, data_dir)
        return any(s.has("test") for s in sources)
    except QuteError:
        return False


# --------------------------------------------------------------------------- #
# npz datasets
# --------------------------------------------------------------------------- #

_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    if not path.is_file():
        from codegen.outdir import missing

        raise QuteError(f"npz file {path} {missing(path, 'file')} (expected a NumPy .npz with {', '.join(_NPZ_REQUIRED)})")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            missing = [k for k in required if k not in files]
            if missing:
                raise QuteError(
                    f"{path} lacks {', '.join(missing)}; a dataset npz needs arrays "
                    f"{', '.join(_NPZ_REQUIRED)} (optional x_ood, num_classes, class_names)"
                )
            return {k: z[k] for k in required + optional if k in files}
    except QuteError:
        raise
    except Exception as e:  # noqa: BLE001 - bad zip, pickled objects, truncation...
        raise QuteError(
            f"cannot read {path} as a NumPy .npz archive of plain arrays: {_one_line(e)}"
        ) from None


def _as_images(x: np.ndarray, key: str, path) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise QuteError(f"{path}: {key} has dtype {x.dtype}; expected numeric images (uint8 or float)")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape[1:]) < 1:
        raise QuteError(f"{path}: {key} has shape {x.shape}; expected images (N, H, W) or (N, H, W, C)")
    if len(x) == 0:
        raise QuteError(f"{path}: {key} holds no images; expected at least one")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise QuteError(f"{path}: {key} contains NaN or infinite values; expected finite pixel values")
    return x


def _as_labels(y: np.ndarray, key: str, n: int, xkey: str, path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise QuteError(f"{path}: {key} has shape {y.shape}; expected integer class labels of shape (N,)")
    if len(y) != n:
        raise QuteError(f"{path}: {key} has {len(y)} labels but {xkey} has {n} images; they must match")
    if y.dtype.kind in "iu":
        pass
    elif y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        pass
    else:
        raise QuteError(f"{path}: {key} has dtype {y.dtype}; expected integer class labels in [0, num_classes)")
    if len(y) and y.min() < 0:
        raise QuteError(f"{path}: {key} has label {y.min()}; expected integer class labels in [0, num_classes)")
    return y.astype(np.int64)


def _load_npz_dataset(spec: str, seed: int, val_fraction: float, limit: int | None) -> Dataset:
    arg = spec[len("npz:"):].strip()
    if not arg:
        raise QuteError("npz: needs a path, e.g. npz:data/my_set.npz")
    path = Path(arg).expanduser()
    a = _read_npz(path, _NPZ_REQUIRED, ("x_ood", "num_classes", "class_names"))
    x_train = _as_images(a["x_train"], "x_train", path)
    x_test = _as_images(a["x_test"], "x_test", path)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise QuteError(
            f"{path}: x_test images are {x_test.shape[1:]} but x_train images are {x_train.shape[1:]}; they must match"
        )
    y_train = _as_labels(a["y_train"], "y_train", len(x_train), "x_train", path)
    y_test = _as_labels(a["y_test"], "y_test", len(x_test), "x_test", path)
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
        x_ood = _as_images(a["x_ood"], "x_ood", path)
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


def _canonical(name: str) -> str:
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
    perm = np.random.default_rng(_seed_seq(seed, "split")).permutation(n)
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
    key = _canonical(name)
    vf = _check_split_args(val_fraction, limit)
    if key.startswith("npz:"):
        return _load_npz_dataset(key, seed, vf, limit)
    if key not in DATASETS:
        raise QuteError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or npz:PATH")

    if key == "digits":
        return _load_digits(seed, vf, limit)

    train, test, where = _load_raw(key, data_dir, need_train=True)
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


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32)[..., None], d.target.astype(np.int64)


def _load_digits(seed: int, val_fraction: float, limit: int | None, test_fraction: float = 0.2) -> Dataset:
    x, y = _digits_raw()
    perm = np.random.default_rng(_seed_seq(seed, "digits-test")).permutation(len(x))
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


# --------------------------------------------------------------------------- #
# Seeds and linear resampling helpers
# --------------------------------------------------------------------------- #


def _seed_seq(seed, *tags: str) -> np.random.SeedSequence:
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise QuteError(f"seed must be an integer; got {seed!r}") from None
    return np.random.SeedSequence([s % (1 << 64)] + [zlib.crc32(t.encode()) for t in tags])


def _linear_matrix(src: np.ndarray, n: int) -> np.ndarray:
    """Rows interpolate linearly at source coordinates ``src`` (clamped to the edges)."""
    s = np.clip(np.asarray(src, np.float64), 0, n - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = s - i0
    m = np.zeros((len(s), n))
    rows = np.arange(len(s))
    np.add.at(m, (rows, i0), 1 - w)
    np.add.at(m, (rows, i1), w)
    return m


def _resize_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """Area averaging when shrinking, linear interpolation when enlarging."""
    if n_dst == n_src:
        return np.eye(n_src)
    if n_dst < n_src:
        edges = np.arange(n_dst + 1) * (n_src / n_dst)
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n_src)[None, :]
        m = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
        return m / m.sum(axis=1, keepdims=True)
    return _linear_matrix((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5, n_src)


def _separable(x: np.ndarray, my: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """out[n, i, j, c] = sum_{a,b} my[i, a] x[n, a, b, c] mx[j, b]."""
    t = np.moveaxis(x, 3, 1)  # N, C, H, W
    t = np.matmul(np.matmul(my.astype(np.float32), t), mx.T.astype(np.float32))
    return np.ascontiguousarray(np.moveaxis(t, 1, 3), dtype=np.float32)


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    if x.shape[1:3] == (h, w):
        return x
    return _separable(x, _resize_matrix(x.shape[1], h), _resize_matrix(x.shape[2], w))


def _minmax_per_image(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((x - lo) / span).astype(np.float32)


def _to_shape(x01: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Images in [0, 1] to (H, W, C): channel conversion, resize, per-image renormalisation."""
    h, w, c = shape
    x = np.asarray(x01, np.float32)
    cin = x.shape[3]
    if cin != c:
        if cin == 3:
            x = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        elif cin != 1:
            x = x.mean(axis=3, keepdims=True)
    if x.shape[1:3] != (h, w):
        x = _minmax_per_image(_resize(x, h, w))
    if x.shape[3] != c:
        x = np.repeat(x, c, axis=3)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- #
# Corruptions
# --------------------------------------------------------------------------- #


def _size_factor(h: int, w: int) -> float:
    """Pixel-sized parameters are tuned for 28x28; scale them, never below half."""
    return max(min(h, w) / 28.0, 0.5)


def _border_mean(x: np.ndarray) -> np.ndarray:
    border = np.concatenate(
        [x[:, 0, :, :], x[:, -1, :, :], x[:, :, 0, :], x[:, :, -1, :]], axis=1
    )
    return border.mean(axis=1).astype(np.float32)  # (N, C)


def _warp(x: np.ndarray, src_fn: Callable[[slice], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Bilinear resampling at per-sample source coordinates; outside pixels take the border mean."""
    n, h, w, c = x.shape
    fill = _border_mean(x)
    out = np.empty_like(x)
    chunk = max(1, 1_500_000 // (h * w * c))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        # a one-pixel frame of the fill value: every coordinate outside the image lands on it
        padded = np.empty((sl.stop - sl.start, h + 2, w + 2, c), np.float32)
        padded[:] = fill[sl][:, None, None, :]
        padded[:, 1:-1, 1:-1] = x[sl]
        sy, sx = src_fn(sl)
        sy = np.clip(sy, -1.0, h) + 1.0
        sx = np.clip(sx, -1.0, w) + 1.0
        y0 = np.minimum(np.floor(sy).astype(np.int64), h)
        x0 = np.minimum(np.floor(sx).astype(np.int64), w)
        wy = (sy - y0).astype(np.float32)[..., None]
        wx = (sx - x0).astype(np.float32)[..., None]
        idx = np.arange(len(padded))[:, None, None]
        top = padded[idx, y0, x0] * (1 - wx) + padded[idx, y0, x0 + 1] * wx
        bottom = padded[idx, y0 + 1, x0] * (1 - wx) + padded[idx, y0 + 1, x0 + 1] * wx
        out[sl] = top * (1 - wy) + bottom * wy
    return out


def _affine(x: np.ndarray, mats: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Sample each output pixel p from ``mats[n] @ (p - centre) + centre + shifts[n]``."""
    n, h, w, _ = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy = (np.arange(h) - cy)[None, :, None]
    dx = (np.arange(w) - cx)[None, None, :]
    if shifts is None:
        shifts = np.zeros((n, 2))

    def src(sl):
        m, s = mats[sl], shifts[sl]
        sy = m[:, 0, 0, None, None] * dy + m[:, 0, 1, None, None] * dx + cy + s[:, 0, None, None]
        sx = m[:, 1, 0, None, None] * dy + m[:, 1, 1, None, None] * dx + cx + s[:, 1, None, None]
        return sy, sx

    return _warp(x, src)


def _signs(rng, n):
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def _gaussian_noise(x, s, rng):
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return x + np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)


def _shot_noise(x, s, rng):
    lam = (60.0, 25.0, 12.0, 5.0, 3.0)[s - 1]
    return (rng.poisson(np.clip(x, 0, 1) * lam) / lam).astype(np.float32)


def _impulse_noise(x, s, rng):
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    u = rng.random(x.shape, dtype=np.float32)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u > 1 - amount / 2] = 1.0
    return out


def _speckle_noise(x, s, rng):
    sigma = (0.15, 0.25, 0.35, 0.45, 0.6)[s - 1]
    return x + x * np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)


def _gaussian_blur(x, s, rng):
    from scipy import ndimage

    k = _size_factor(*x.shape[1:3])
    sigma = (0.8, 1.1, 1.4, 1.8, 2.4)[s - 1] * k
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest")


def _motion_blur(x, s, rng):
    n, h, w, _ = x.shape
    k = _size_factor(h, w)
    length = (1.5, 2.5, 3.5, 5.0, 7.0)[s - 1] * k
    taps = np.linspace(-length / 2, length / 2, int(np.ceil(length)) + 1)
    n_angles = 8
    which = rng.integers(0, n_angles, n)
    out = np.empty_like(x)
    for a in range(n_angles):
        idx = np.nonzero(which == a)[0]
        if len(idx) == 0:
            continue
        theta = np.pi * a / n_angles
        sub = x[idx]
        acc = np.zeros_like(sub)
        for t in taps:
            my = _linear_matrix(np.arange(h) - t * np.sin(theta), h)
            mx = _linear_matrix(np.arange(w) - t * np.cos(theta), w)
            acc += _separable(sub, my, mx)
        out[idx] = acc / len(taps)
    return out


def _rotate(x, s, rng):
    n = len(x)
    deg = (10.0, 20.0, 30.0, 40.0, 55.0)[s - 1] * _signs(rng, n) * rng.uniform(0.85, 1.15, n)
    t = np.deg2rad(deg)
    mats = np.stack([np.stack([np.cos(t), -np.sin(t)], 1), np.stack([np.sin(t), np.cos(t)], 1)], 1)
    return _affine(x, mats)


def _shear(x, s, rng):
    n = len(x)
    amount = (0.15, 0.25, 0.35, 0.5, 0.65)[s - 1] * _signs(rng, n) * rng.uniform(0.85, 1.15, n)
    horizontal = rng.random(n) < 0.5
    mats = np.tile(np.eye(2), (n, 1, 1))
    mats[horizontal, 1, 0] = amount[horizontal]
    mats[~horizontal, 0, 1] = amount[~horizontal]
    return _affine(x, mats)


def _scale(x, s, rng):
    n = len(x)
    factor = (0.88, 0.78, 0.68, 0.58, 0.48)[s - 1] * rng.uniform(0.95, 1.05, n)
    mats = np.eye(2)[None] / factor[:, None, None]
    return _affine(x, mats)


def _translate(x, s, rng):
    n, h, w, _ = x.shape
    frac = (0.07, 0.12, 0.18, 0.24, 0.32)[s - 1]
    phi = rng.uniform(0, 2 * np.pi, n)
    shifts = np.stack([np.sin(phi) * frac * h, np.cos(phi) * frac * w], 1)
    return _affine(x, np.tile(np.eye(2), (n, 1, 1)), shifts)


def _elastic(x, s, rng):
    from scipy import ndimage

    n, h, w, _ = x.shape
    k = _size_factor(h, w)
    alpha = (0.6, 1.0, 1.4, 1.9, 2.5)[s - 1] * k
    smooth = max(1.0, 0.12 * min(h, w))
    field = rng.standard_normal((n, h, w, 2), dtype=np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0, smooth, smooth, 0), mode="reflect")
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
    field *= alpha
    gy = np.arange(h, dtype=np.float32)[None, :, None]
    gx = np.arange(w, dtype=np.float32)[None, None, :]
    return _warp(x, lambda sl: (gy + field[sl, :, :, 0], gx + field[sl, :, :, 1]))


def _brightness(x, s, rng):
    return x + np.float32((0.1, 0.2, 0.3, 0.4, 0.5)[s - 1])


def _contrast(x, s, rng):
    c = np.float32((0.6, 0.45, 0.3, 0.2, 0.1)[s - 1])
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * c + m


def _smooth_field(rng, n, h, w, grid=4):
    """Per-sample smooth random fields in [0, 1] from a coarse grid (Gaussian interpolation)."""

    def weights(size):
        centres = np.linspace(0, size - 1, grid)
        width = max((size - 1) / (grid - 1) * 0.6, 0.5)
        m = np.exp(-((np.arange(size)[:, None] - centres[None, :]) ** 2) / (2 * width**2))
        return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)

    g = rng.random((n, grid, grid), dtype=np.float32)
    f = weights(h) @ g @ weights(w).T
    return _minmax_per_image(f[..., None])


def _fog(x, s, rng):
    n, h, w, _ = x.shape
    a = np.float32((0.25, 0.4, 0.55, 0.7, 0.9)[s - 1])
    return (x + a * _smooth_field(rng, n, h, w)) / (1 + a)


def _pixelate(x, s, rng):
    _, h, w, _ = x.shape
    r = (0.75, 0.6, 0.5, 0.4, 0.3)[s - 1]

    def matrix(size):
        small = max(1, int(round(size * r)))
        if small >= size:
            small = size - 1 if size > 1 else 1
        down = _resize_matrix(size, small)
        up = np.zeros((size, small))
        up[np.arange(size), np.minimum(((np.arange(size) + 0.5) * small / size).astype(int), small - 1)] = 1
        return up @ down

    return _separable(x, matrix(h), matrix(w))


def _stripe(x, s, rng):
    n, h, w, _ = x.shape
    count = (1, 2, 3, 4, 5)[s - 1]
    width = max(1, int(round(min(h, w) / 28.0)))
    vertical = rng.random(n) < 0.5
    length = np.where(vertical, w, h)
    pos = (rng.random((n, count)) * (length[:, None] - width + 1)).astype(np.int64)
    line = np.arange(max(h, w))[None, :, None]
    mask1d = ((line >= pos[:, None, :]) & (line < pos[:, None, :] + width)).any(axis=2)  # (n, max(h, w))
    mask = np.where(
        vertical[:, None, None],
        mask1d[:, None, :w],
        mask1d[:, :h, None],
    )
    out = x.copy()
    out[mask] = 1.0
    return out


def _draw(out: np.ndarray, pts: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Set the pixels under points ``pts`` (n, P, 2) (row, col) to 1."""
    n, h, w, _ = out.shape
    r = np.rint(pts[..., 0]).astype(np.int64)
    c = np.rint(pts[..., 1]).astype(np.int64)
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    if keep is not None:
        ok &= keep
    idx = np.broadcast_to(np.arange(n)[:, None], r.shape)
    out[idx[ok], r[ok], c[ok]] = 1.0
    return out


def _zigzag(x, s, rng):
    n, h, w, _ = x.shape
    lines = (1, 2, 2, 3, 4)[s - 1]
    vertices = (3, 4, 5, 6, 6)[s - 1]
    out = x.copy()
    p = (h + w) * (vertices - 1)
    t = np.linspace(0, vertices - 1, p)
    i0 = np.minimum(np.floor(t).astype(int), vertices - 2)
    frac = t - i0
    along = np.linspace(0.0, 1.0, vertices)[None, :]
    for _ in range(lines):
        across = rng.random((n, vertices))
        horizontal = (rng.random(n) < 0.5)[:, None]
        rows = np.where(horizontal, across, along) * (h - 1)
        cols = np.where(horizontal, along, across) * (w - 1)
        pr = rows[:, i0] * (1 - frac) + rows[:, i0 + 1] * frac
        pc = cols[:, i0] * (1 - frac) + cols[:, i0 + 1] * frac
        _draw(out, np.stack([pr, pc], -1))
    return out


def _dotted_line(x, s, rng):
    """Dotted straight lines through a random inner point, crossing the whole image."""
    n, h, w, _ = x.shape
    lines = (1, 2, 3, 4, 5)[s - 1]
    spacing = 2.0 * max(1.0, min(h, w) / 28.0)
    reach = np.hypot(h, w)
    dist = np.arange(-np.ceil(reach / spacing), np.ceil(reach / spacing) + 1) * spacing
    out = x.copy()
    for _ in range(lines):
        centre = (0.2 + 0.6 * rng.random((n, 2))) * [h - 1, w - 1]
        phi = rng.uniform(0, np.pi, n)
        unit = np.stack([np.sin(phi), np.cos(phi)], 1)
        pts = centre[:, None, :] + unit[:, None, :] * dist[None, :, None]
        _draw(out, pts)
    return out


def _occlusion(x, s, rng):
    n, h, w, _ = x.shape
    frac = (0.2, 0.3, 0.4, 0.5, 0.6)[s - 1]
    bh, bw = max(1, int(round(frac * h))), max(1, int(round(frac * w)))
    r0 = rng.integers(0, h - bh + 1, n)[:, None, None]
    c0 = rng.integers(0, w - bw + 1, n)[:, None, None]
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    mask = (rows >= r0) & (rows < r0 + bh) & (cols >= c0) & (cols < c0 + bw)
    fill = rng.random(n, dtype=np.float32)[:, None, None, None]
    return np.where(mask[..., None], fill, x)


def _inverse(x, s, rng):
    a = np.float32((0.2, 0.4, 0.6, 0.8, 1.0)[s - 1])
    return x + a * (1 - 2 * x)


_CORRUPTION_FNS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "rotate": _rotate,
    "shear": _shear,
    "scale": _scale,
    "translate": _translate,
    "elastic": _elastic,
    "brightness": _brightness,
    "contrast": _contrast,
    "fog": _fog,
    "pixelate": _pixelate,
    "stripe": _stripe,
    "zigzag": _zigzag,
    "dotted_line": _dotted_line,
    "occlusion": _occlusion,
    "inverse": _inverse,
}
CORRUPTIONS: tuple[str, ...] = tuple(_CORRUPTION_FNS)


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5, 5 strongest) to NHWC images in [0, 1].

    Returns a new float32 array of the same shape, clipped to [0, 1]; the
    result depends only on (x, name, severity, seed).
    """
    if name not in _CORRUPTION_FNS:
        raise QuteError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise QuteError(f"corruption severity must be one of {', '.join(map(str, SEVERITIES))}; got {severity!r}")
    arr = np.asarray(x)
    if arr.ndim != 4:
        raise QuteError(f"corrupt expects images of shape (N, H, W, C); got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise QuteError(f"corrupt expects float images in [0, 1]; got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float32, copy=True)
    if arr.size == 0:
        return arr
    rng = np.random.default_rng(_seed_seq(seed, "corrupt", name))
    out = _CORRUPTION_FNS[name](arr, int(severity), rng)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


# --------------------------------------------------------------------------- #
# Out-of-distribution sets
# --------------------------------------------------------------------------- #

_DEFAULT_OOD: dict[str, str] = {
    "mnist": "fashion_mnist",
    "fashion_mnist": "mnist",
    "digits": "fashion_mnist",
    "cifar10": "svhn",
    "svhn": "cifar10",
}


def default_ood(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The OOD set that goes with dataset ``name``.

    mnist <-> fashion_mnist, digits -> fashion_mnist, cifar10 <-> svhn, each
    when its test files are found locally (no download is tried here);
    otherwise the synthetic "noise".  ``npz:PATH`` datasets get "noise" (a
    loaded npz Dataset carrying ``x_ood`` uses it instead: see load_ood).
    """
    key = _canonical(name)
    if key.startswith("npz:"):
        return "noise"
    if key not in _DEFAULT_OOD:
        raise QuteError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or npz:PATH")
    pick = _DEFAULT_OOD[key]
    return pick if _available(pick, data_dir) else "noise"


def _synthetic(kind: str, n: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    h, w, c = shape
    if kind == "noise":
        return rng.random((n, h, w, c), dtype=np.float32)
    if kind == "blobs":
        from scipy import ndimage

        z = rng.standard_normal((n, h, w, c), dtype=np.float32)
        sigma = max(0.8, min(h, w) / 8.0)
        z = ndimage.gaussian_filter(z, sigma=(0, sigma, sigma, 0), mode="wrap")
        z = (z - z.mean(axis=(1, 2, 3), keepdims=True)) / (z.std(axis=(1, 2, 3), keepdims=True) + 1e-8)
        return _minmax_per_image(1.0 / (1.0 + np.exp(-3.0 * z)))
    if kind == "stripes":
        theta = rng.uniform(0, np.pi, n)[:, None, None]
        cycles = rng.uniform(1.5, max(2.0, min(h, w) / 3.0), n)[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
        yy = np.arange(h)[None, :, None] / max(h, 1)
        xx = np.arange(w)[None, None, :] / max(w, 1)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        c1 = rng.random((n, 1, 1, c))
        c2 = rng.random((n, 1, 1, c))
        img = wave[..., None] * c1 + (1 - wave[..., None]) * c2
        return _minmax_per_image(img.astype(np.float32))
    raise AssertionError(kind)


def _ood_names() -> str:
    return ", ".join(OOD_SYNTHETIC + DATASETS + ("npz (the dataset's own x_ood)", "npz:PATH"))


def load_ood(
    ood: str | None,
    dataset: Dataset,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    n: int | None = None,
) -> tuple[str, np.ndarray]:
    """Out-of-distribution images shaped and scaled like ``dataset``'s inputs.

    ``ood=None`` picks the dataset's own ``x_ood`` ("npz") when it has one,
    else :func:`default_ood`.  Returns (name used, float32 (N, H, W, C) in [0, 1]).
    Real sets are the other dataset's test images, converted to the ID shape;
    ``n`` caps the count (seeded choice; synthetic sets default to the size of
    the ID test set).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise QuteError(f"the number of OOD samples must be a positive integer or None; got {n!r}")
    shape = dataset.input_shape
    if ood is None:
        ood = "npz" if dataset.x_ood is not None else default_ood(dataset.name, data_dir)
    if not isinstance(ood, str):
        raise QuteError(f"OOD set must be a name; choose one of {_ood_names()}")
    key = ood.strip()
    low = key.lower()
    rng = np.random.default_rng(_seed_seq(seed, "ood", low))

    if low in OOD_SYNTHETIC:
        count = int(n) if n is not None else max(1, len(dataset.x_test))
        return low, _synthetic(low, count, shape, rng)

    if low == "npz":
        if dataset.x_ood is None:
            raise QuteError(
                f"OOD set 'npz' needs a dataset loaded from npz:PATH with an x_ood array; "
                f"{dataset.name!r} has none; choose one of {_ood_names()}"
            )
        images, name = np.asarray(dataset.x_ood, np.float32), "npz"
    elif low.startswith("npz:"):
        path = Path(key[4:].strip()).expanduser()
        a = _read_npz(path, ("x_test",))
        raw = _as_images(a["x_test"], "x_test", path)
        if raw.dtype == np.uint8:
            images = raw.astype(np.float32) / 255.0
        else:
            lo, hi = float(raw.min()), float(raw.max())
            images = Normalisation.from_range(lo, hi).apply(raw) if hi > lo else np.zeros(raw.shape, np.float32)
        name = "npz:" + key[4:].strip()
    else:
        canon = _canonical(key)
        if canon == "digits":
            raw, _ = _digits_raw()
            images = raw / 16.0
        elif canon in _ALIASES:
            _, (raw, _), _ = _load_raw(canon, data_dir, need_train=False)
            images = raw.astype(np.float32) / 255.0
        else:
            raise QuteError(f"unknown OOD set {ood!r}; choose one of {_ood_names()}")
        name = canon

    if n is not None and n < len(images):
        images = images[np.sort(rng.choice(len(images), size=int(n), replace=False))]
    return name, _to_shape(images, shape)
