"""Where data lives (data directories, system folders, the online check) and file formats."""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import zlib
from pathlib import Path

import numpy as np

from codegen import outdir
from qute.errors import QuteError


# Folder names accepted under a data directory, first one is the canonical one.
ALIASES: dict[str, tuple[str, ...]] = {
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
    for cand in (Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"):
        if cand.is_dir() and all(cand.resolve() != f.resolve() for f in found):
            found.append(cand)
    return found


def system_dirs(name: str) -> list[Path]:
    """Folders outside the data directories that may hold ``name``.

    The Keras download cache, and for fashion_mnist the Debian package
    ``dataset-fashion-mnist``.  Tests monkeypatch this to ``[]``.
    """
    out: list[Path] = []
    keras_home = os.environ.get("KERAS_HOME")
    cache = Path(keras_home) / "datasets" if keras_home else Path.home() / ".keras" / "datasets"
    out.append(cache)
    out.extend(cache / a for a in ALIASES.get(name, ()))
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


def online(host: str, port: int = 443, timeout: float = 2.0) -> bool:
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
        arrays = read_npz(self.where, (f"x_{split}", f"y_{split}"))
        x = as_images(arrays[f"x_{split}"], f"x_{split}", self.where)
        y = as_labels(arrays[f"y_{split}"], f"y_{split}", len(x), f"x_{split}", self.where)
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


def candidate_sources(name: str, data_dir) -> tuple[list[_Source], list[Path]]:
    """Candidate sources for a named dataset, in search order, and the places looked in."""
    roots = data_dirs(data_dir)
    folders: list[tuple[Path, bool]] = []  # (folder, may hold IDX files directly)
    for root in roots:
        folders.extend((root / a, True) for a in ALIASES[name])
        folders.append((root, False))
    extra = system_dirs(name)
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
    looked = [r / ALIASES[name][0] for r in roots] + [r for r in roots] + extra
    return sources, looked


def load_raw(name: str, data_dir, need_train: bool):
    """(train or None, test, where) for a named file-backed dataset, raw uint8 NHWC."""
    sources, looked = candidate_sources(name, data_dir)
    partial: _Source | None = None
    for src in sources:
        if src.has("test") and (not need_train or src.has("train")):
            train = src.load("train") if need_train else None
            return train, src.load("test"), str(src.where)
        if need_train and partial is None and src.has("test"):
            partial = src

    host = _KERAS_HOSTS.get(name)
    if host is not None and online(host):
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


# --------------------------------------------------------------------------- #
# npz datasets
# --------------------------------------------------------------------------- #

NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise QuteError(f"npz file {path} {outdir.missing(path, 'file')} (expected a NumPy .npz with {', '.join(NPZ_REQUIRED)})")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            missing = [k for k in required if k not in files]
            if missing:
                raise QuteError(
                    f"{path} lacks {', '.join(missing)}; a dataset npz needs arrays "
                    f"{', '.join(NPZ_REQUIRED)} (optional x_ood, num_classes, class_names)"
                )
            return {k: z[k] for k in required + optional if k in files}
    except QuteError:
        raise
    except Exception as e:  # noqa: BLE001 - bad zip, pickled objects, truncation...
        raise QuteError(
            f"cannot read {path} as a NumPy .npz archive of plain arrays: {_one_line(e)}"
        ) from None


def as_images(x: np.ndarray, key: str, path) -> np.ndarray:
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


def as_labels(y: np.ndarray, key: str, n: int, xkey: str, path) -> np.ndarray:
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
