"""Tests for qute.data: loaders, IDX parsing, npz validation, corruptions, OOD sets.

No test downloads: every test runs with the online check forced off, the
system locations (Keras cache, Debian) hidden and $QUTE_DATA pointing at an
empty folder unless it passes its own data directory.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import qute.data.sources as qds
from qute.data import (
    CORRUPTIONS,
    DATASETS,
    OOD_SYNTHETIC,
    SEVERITIES,
    Dataset,
    Normalisation,
    corrupt,
    data_dirs,
    default_ood,
    load_dataset,
    load_ood,
    read_idx,
)
from qute.errors import QuteError


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    def no_network(*args, **kwargs):
        return False

    monkeypatch.setattr(qds, "online", no_network)
    monkeypatch.setattr(qds, "system_dirs", lambda name: [])
    monkeypatch.setenv("QUTE_DATA", str(tmp_path_factory.mktemp("empty_data")))


def _real_dirs(monkeypatch) -> list[Path]:
    monkeypatch.delenv("QUTE_DATA", raising=False)
    return data_dirs()


def _real_dir_with(monkeypatch, *files: str) -> Path:
    for d in _real_dirs(monkeypatch):
        if all((d / f).is_file() for f in files):
            return d
    pytest.skip(f"shared data with {', '.join(files)} not present")


# ----------------------------------------------------------------- helpers


def write_idx(path: Path, arr: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_set(folder: Path, n_train=30, n_test=12, h=28, w=28, seed=0, train=True, gz=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    splits = (("train", n_train), ("t10k", n_test)) if train else (("t10k", n_test),)
    for prefix, n in splits:
        x = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz=gz)
        out[prefix] = (x, y)
    return out


def tiny_dataset(shape=(8, 8, 1), n=4) -> Dataset:
    z = np.zeros((n,) + shape, np.float32)
    y = np.zeros(n, np.int64)
    return Dataset("tiny", z, y, z, y, z, y, num_classes=2, normalisation=Normalisation(1.0, 0.0, 0.0, 1.0))


# ----------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_range():
    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.input_shape == (8, 8, 1)
    assert ds.num_classes == 10
    assert ds.class_names == tuple(str(i) for i in range(10))
    total = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert total == 1797
    assert len(ds.x_test) == round(0.2 * 1797)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.ndim == 4 and x.shape[1:] == (8, 8, 1)
        assert len(x) == len(y) > 0
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) <= set(range(10))
    assert ds.x_train.max() == 1.0
    assert ds.normalisation == Normalisation(scale=1 / 16, offset=0.0, raw_min=0.0, raw_max=16.0)
    assert ds.x_ood is None


def test_digits_splits_are_deterministic_and_disjoint():
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = load_dataset("digits", seed=4)
    assert not np.array_equal(a.x_test, c.x_test)
    # no image is in two splits (digits has a few exact duplicates, so compare counts of rows)
    rows = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}  # noqa: E731
    all_rows = rows(np.concatenate([a.x_train, a.x_val, a.x_test]))
    assert len(rows(a.x_train) & rows(a.x_test)) <= 1797 - len(all_rows)


def test_val_fraction_and_limit():
    ds = load_dataset("digits", val_fraction=0.25, limit=100)
    assert len(ds.x_train) == 100
    rest = 1797 - round(0.2 * 1797)
    assert len(ds.x_val) == round(0.25 * rest)
    assert len(load_dataset("digits", val_fraction=0.0).x_val) == 0
    for bad in (-0.1, 1.0, "x"):
        with pytest.raises(QuteError, match="val_fraction"):
            load_dataset("digits", val_fraction=bad)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(QuteError, match="limit"):
            load_dataset("digits", limit=bad)


def test_unknown_dataset_lists_choices():
    with pytest.raises(QuteError) as e:
        load_dataset("imagenet")
    msg = str(e.value)
    assert "imagenet" in msg and "npz:PATH" in msg
    assert all(name in msg for name in DATASETS)
    assert "\n" not in msg


def test_dataset_name_aliases():
    assert load_dataset("Digits").name == "digits"


# ----------------------------------------------------------------- normalisation


def test_normalisation_roundtrip_and_apply():
    n = Normalisation.from_range(-2.0, 6.0)
    assert n.scale == pytest.approx(1 / 8) and n.offset == pytest.approx(0.25)
    out = n.apply(np.array([-2.0, 2.0, 6.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])
    assert Normalisation.from_dict(n.to_dict()) == n
    with pytest.raises(QuteError, match="raw_max"):
        Normalisation.from_dict({"scale": 1.0, "offset": 0.0, "raw_min": 0.0})
    with pytest.raises(QuteError):
        Normalisation.from_dict({"scale": "a", "offset": 0.0, "raw_min": 0.0, "raw_max": 1.0})
    with pytest.raises(QuteError):
        Normalisation.from_range(1.0, 1.0)


# ----------------------------------------------------------------- data dirs


def test_data_dirs_order(monkeypatch, tmp_path):
    assert data_dirs(tmp_path) == [tmp_path]
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("QUTE_DATA", f"{a}{__import__('os').pathsep}{b}")
    assert data_dirs() == [a, b]
    assert data_dirs(str(tmp_path)) == [tmp_path]
    monkeypatch.delenv("QUTE_DATA")
    monkeypatch.chdir(tmp_path)
    (tmp_path.parent / "shared" / "data").mkdir(parents=True, exist_ok=True)
    found = data_dirs()
    assert (tmp_path.parent / "shared" / "data").resolve() in [p.resolve() for p in found]


# ----------------------------------------------------------------- IDX


def test_read_idx_roundtrip(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (True, False):
        p = write_idx(tmp_path / f"img{gz}", x, gz=gz)
        np.testing.assert_array_equal(read_idx(p, 2051), x)
    y = np.array([1, 2, 3], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "lab", y), 2049), y)


@pytest.mark.parametrize(
    "payload, match",
    [
        (struct.pack(">I", 2049) + struct.pack(">I", 2) + b"\x00\x01", "magic"),  # labels where images expected
        (struct.pack(">III", 2051, 2, 2) + struct.pack(">I", 2) + b"\x00" * 7, "corrupt"),  # truncated data
        (struct.pack(">IIII", 2051, 1, 2, 2) + b"\x00" * 9, "corrupt"),  # trailing bytes
        (struct.pack(">II", 2051, 5), "truncated"),  # header cut short
        (b"\x00\x08", "header"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, payload, match):
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(payload)
    with pytest.raises(QuteError, match=match):
        read_idx(p, 2051)


def test_read_idx_rejects_broken_gzip(tmp_path):
    p = tmp_path / "broken.gz"
    p.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(QuteError, match="cannot read"):
        read_idx(p, 2051)


def test_mnist_from_idx_files(tmp_path):
    raw = make_idx_set(tmp_path / "mnist", n_train=40, n_test=12)
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.25, seed=1)
    assert ds.input_shape == (28, 28, 1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (30, 10, 12)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_test[..., 0], raw["t10k"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, raw["t10k"][1])
    # the training + validation images are a permutation of the training file
    got = np.concatenate([ds.x_train, ds.x_val])[..., 0]
    order = np.lexsort(got.reshape(len(got), -1).T)
    want = raw["train"][0] / 255.0
    np.testing.assert_allclose(got[order], want[np.lexsort(want.reshape(len(want), -1).T)], rtol=1e-6)
    assert ds.normalisation.scale == pytest.approx(1 / 255)
    assert str(tmp_path / "mnist") == ds.source
    again = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.25, seed=1)
    np.testing.assert_array_equal(ds.x_train, again.x_train)


def test_mnist_uncompressed_idx_and_limit(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=50, n_test=5, gz=False)
    ds = load_dataset("mnist", data_dir=tmp_path, limit=7)
    assert len(ds.x_train) == 7 and len(ds.x_val) == 5 and len(ds.x_test) == 5


def test_mnist_corrupt_idx_raises(tmp_path):
    raw = make_idx_set(tmp_path / "mnist", n_train=10, n_test=5)
    # label file with fewer labels than images
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", raw["train"][1][:7])
    with pytest.raises(QuteError, match="10 images but .* 7 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    # an image file whose header lies about its size
    p = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5]))
    with pytest.raises(QuteError, match="corrupt IDX"):
        load_dataset("mnist", data_dir=tmp_path)


def test_keras_style_npz(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    np.savez(
        tmp_path / "mnist" / "mnist.npz",
        x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, 20),
        x_test=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, 6),
    )
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape[1:] == (28, 28, 1) and len(ds.x_test) == 6


def test_missing_dataset_names_places_and_remedy(tmp_path):
    with pytest.raises(QuteError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "mnist" in msg and str(tmp_path) in msg
    assert "--data-dir" in msg and "QUTE_DATA" in msg
    assert "\n" not in msg
    for name in ("cifar10", "svhn", "fashion_mnist"):
        with pytest.raises(QuteError, match=name):
            load_dataset(name, data_dir=tmp_path)


def test_online_fallback_uses_keras_loader(tmp_path, monkeypatch):
    """The download path, with keras' loader replaced: no network is touched."""
    import keras

    rng = np.random.default_rng(0)
    fake = (
        (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20).astype(np.uint8)),
        (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5).astype(np.uint8)),
    )
    monkeypatch.setattr(qds, "online", lambda *a, **k: True)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: fake)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.source == "keras.datasets.mnist" and ds.input_shape == (28, 28, 1)

    def broken():
        raise OSError("connection reset\nby peer")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", broken)
    with pytest.raises(QuteError, match="connection reset by peer"):
        load_dataset("mnist", data_dir=tmp_path)


def test_fashion_test_only_is_an_ood_set_but_not_a_dataset(tmp_path):
    raw = make_idx_set(tmp_path / "fashion_mnist", n_test=15, train=False)
    with pytest.raises(QuteError) as e:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "training files are missing" in msg and str(tmp_path / "fashion_mnist") in msg
    name, x = load_ood("fashion_mnist", tiny_dataset((28, 28, 1)), data_dir=tmp_path)
    assert name == "fashion_mnist"
    np.testing.assert_allclose(x[..., 0], raw["t10k"][0] / 255.0, rtol=1e-6)
    name, x = load_ood("fashion_mnist", load_dataset("digits"), data_dir=tmp_path, n=5)
    assert x.shape == (5, 8, 8, 1) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1


def test_real_mnist_if_present(monkeypatch):
    root = _real_dir_with(monkeypatch, "mnist/train-images-idx3-ubyte.gz", "mnist/t10k-images-idx3-ubyte.gz")
    ds = load_dataset("mnist", data_dir=root, limit=500)
    assert len(ds.x_train) == 500 and len(ds.x_val) == 6000 and len(ds.x_test) == 10000
    assert ds.input_shape == (28, 28, 1) and ds.x_test.dtype == np.float32
    assert ds.x_test.max() == 1.0 and ds.x_test.min() == 0.0
    assert np.bincount(ds.y_test).tolist()[:2] == [980, 1135]


def test_real_fashion_test_only_if_present(monkeypatch):
    root = _real_dir_with(monkeypatch, "fashion_mnist/t10k-images-idx3-ubyte.gz")
    if any((root / "fashion_mnist" / f).exists() for f in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
        pytest.skip("shared data has the full Fashion-MNIST")
    with pytest.raises(QuteError, match="training files are missing"):
        load_dataset("fashion_mnist", data_dir=root)
    digits = load_dataset("digits")
    name, x = load_ood(None, digits, data_dir=root, n=200)
    assert name == "fashion_mnist" and x.shape == (200, 8, 8, 1)
    assert default_ood("digits", data_dir=root) == "fashion_mnist"
    assert default_ood("mnist", data_dir=root) == "fashion_mnist"


# ----------------------------------------------------------------- cifar10 / svhn


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    ds = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)
    assert ds.input_shape == (32, 32, 3)
    assert len(ds.x_train) + len(ds.x_val) == 20 and len(ds.x_test) == 4
    # channel-first rows become NHWC
    want = batches["test_batch"][0].reshape(3, 32, 32).transpose(1, 2, 0) / 255.0
    np.testing.assert_allclose(ds.x_test[0], want, rtol=1e-6)
    assert ds.class_names[0] == "airplane"


def test_svhn_mat(tmp_path):
    import scipy.io

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3]] * (n // 4) + [[5]] * (n % 4), dtype=np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", data_dir=tmp_path)
    assert ds.input_shape == (32, 32, 3)
    assert ds.y_test.tolist() == [0, 1, 2, 3]
    name, ood = load_ood("svhn", load_dataset("digits"), data_dir=tmp_path)
    assert name == "svhn" and ood.shape == (4, 8, 8, 1)


# ----------------------------------------------------------------- npz datasets


def _save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def _good_arrays(rng, n_train=20, n_test=8, shape=(6, 5), dtype=np.uint8):
    return dict(
        x_train=rng.integers(0, 256, (n_train,) + shape).astype(dtype),
        y_train=np.arange(n_train) % 3,
        x_test=rng.integers(0, 256, (n_test,) + shape).astype(dtype),
        y_test=np.arange(n_test) % 3,
    )


def test_npz_uint8_happy_path(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _good_arrays(rng)
    arrays["x_ood"] = rng.integers(0, 256, (7, 6, 5), dtype=np.uint8)
    spec = _save(tmp_path / "set.npz", **arrays)
    ds = load_dataset(spec, val_fraction=0.25)
    assert ds.input_shape == (6, 5, 1)
    assert ds.num_classes == 3
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (15, 5, 8)
    assert ds.normalisation == Normalisation(1 / 255, 0.0, 0.0, 255.0)
    np.testing.assert_allclose(ds.x_test[..., 0], arrays["x_test"] / 255.0, rtol=1e-6)
    assert ds.x_ood.shape == (7, 6, 5, 1)
    name, x = load_ood(None, ds)
    assert name == "npz" and x.shape == (7, 6, 5, 1)
    name, x = load_ood(None, ds, n=3)
    assert x.shape == (3, 6, 5, 1)


def test_npz_float_uses_min_max(tmp_path):
    rng = np.random.default_rng(1)
    arrays = dict(
        x_train=rng.uniform(-3.0, 5.0, (12, 4, 4, 3)).astype(np.float32),
        y_train=np.arange(12) % 4,
        x_test=rng.uniform(-3.0, 5.0, (4, 4, 4, 3)).astype(np.float32),
        y_test=np.array([0, 1, 2, 3]),
        num_classes=np.array(5),
        class_names=np.array(["a", "b", "c", "d", "e"]),
    )
    arrays["x_train"][0, 0, 0, 0] = -3.0
    arrays["x_test"][0, 0, 0, 0] = 5.0
    ds = load_dataset(_save(tmp_path / "f.npz", **arrays), val_fraction=0.0)
    n = ds.normalisation
    assert (n.raw_min, n.raw_max) == (-3.0, 5.0)
    assert n.scale == pytest.approx(1 / 8) and n.offset == pytest.approx(3 / 8)
    assert ds.x_train.min() >= 0 and ds.x_test.max() == pytest.approx(1.0)
    assert ds.num_classes == 5 and ds.class_names == ("a", "b", "c", "d", "e")
    np.testing.assert_allclose(n.apply(arrays["x_test"]), ds.x_test, rtol=1e-6)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("y_test"), "lacks y_test"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "19 labels but x_train has 20"),
        (lambda a: a.update(x_train=np.zeros(20, np.uint8)), r"expected images \(N, H, W\)"),
        (lambda a: a.update(x_train=np.zeros((20, 2, 2, 1, 1), np.uint8)), r"expected images"),
        (lambda a: a.update(x_test=np.zeros((8, 7, 7), np.uint8)), "must match"),
        (lambda a: a.update(y_train=np.full(20, 0.5)), "integer class labels"),
        (lambda a: a.update(y_test=np.array([0, 1, 2, -1, 0, 1, 2, 0])), "integer class labels"),
        (lambda a: a.update(num_classes=np.array(2)), r"expected integer class labels in \[0, 2\)"),
        (lambda a: a.update(y_train=np.zeros(20, int), y_test=np.zeros(8, int)), "at least 2 classes"),
        (lambda a: a.update(x_train=np.full((20, 6, 5), np.nan)), "NaN"),
        (lambda a: a.update(x_ood=np.zeros((3, 2, 2), np.uint8)), "x_ood"),
        (lambda a: a.update(x_train=np.array([["a"] * 5] * 6)[None].repeat(20, 0)), "numeric images"),
    ],
)
def test_npz_bad_inputs(tmp_path, change, match):
    arrays = _good_arrays(np.random.default_rng(0))
    change(arrays)
    with pytest.raises(QuteError, match=match):
        load_dataset(_save(tmp_path / "bad.npz", **arrays))


def test_npz_unreadable_or_missing(tmp_path):
    with pytest.raises(QuteError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(QuteError, match="cannot read"):
        load_dataset(f"npz:{junk}")
    objs = tmp_path / "objs.npz"
    arrays = _good_arrays(np.random.default_rng(0))
    arrays["y_train"] = np.array([{"a": 1}] * 20, dtype=object)
    np.savez(objs, **arrays)
    with pytest.raises(QuteError, match="cannot read"):
        load_dataset(f"npz:{objs}")
    with pytest.raises(QuteError, match="needs a path"):
        load_dataset("npz:")


# ----------------------------------------------------------------- corruptions


@pytest.fixture(scope="module")
def digit_images():
    return load_dataset("digits").x_test[:64]


@pytest.fixture(scope="module")
def colour_images():
    return load_ood("blobs", tiny_dataset((32, 32, 3)), n=24, seed=5)[1]


def test_corruption_catalogue():
    assert len(CORRUPTIONS) >= 12 and len(set(CORRUPTIONS)) == len(CORRUPTIONS)
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_properties(name, digit_images, colour_images):
    for x in (digit_images, colour_images):
        before = x.copy()
        dist = {}
        for s in SEVERITIES:
            out = corrupt(x, name, s, seed=7)
            assert out.shape == x.shape and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
            assert out is not x
            np.testing.assert_array_equal(out, corrupt(x, name, s, seed=7))
            dist[s] = float(np.abs(out - x).mean())
        np.testing.assert_array_equal(x, before)  # input untouched
        assert dist[1] > 0, f"{name} severity 1 left the images unchanged"
        assert dist[5] > dist[1], f"{name}: severity 5 ({dist[5]:.4f}) not stronger than 1 ({dist[1]:.4f})"


def test_corruption_on_mnist_shape_is_fast_enough():
    import time

    x = np.random.default_rng(0).random((2000, 28, 28, 1), dtype=np.float32)
    start = time.perf_counter()
    for name in CORRUPTIONS:
        corrupt(x, name, 3)
    assert time.perf_counter() - start < 20  # 10,000 images take ~10x this


def test_corruption_seed_matters_for_random_ones(digit_images):
    a = corrupt(digit_images, "gaussian_noise", 3, seed=0)
    b = corrupt(digit_images, "gaussian_noise", 3, seed=1)
    assert not np.array_equal(a, b)


def test_corruption_bad_arguments(digit_images):
    with pytest.raises(QuteError) as e:
        corrupt(digit_images, "snow_storm", 1)
    assert "gaussian_noise" in str(e.value) and "snow_storm" in str(e.value)
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(QuteError, match="severity"):
            corrupt(digit_images, "rotate", bad)
    with pytest.raises(QuteError, match=r"\(N, H, W, C\)"):
        corrupt(digit_images[0], "rotate", 1)
    with pytest.raises(QuteError, match="float"):
        corrupt((digit_images * 255).astype(np.uint8), "rotate", 1)
    assert corrupt(digit_images[:0], "rotate", 1).shape == (0, 8, 8, 1)


# ----------------------------------------------------------------- OOD


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("kind", OOD_SYNTHETIC)
def test_synthetic_ood_shapes(kind, shape):
    ds = tiny_dataset(shape, n=9)
    name, x = load_ood(kind, ds)
    assert name == kind and x.shape == (9,) + shape and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05
    name, y = load_ood(kind, ds, n=20, seed=1)
    assert y.shape == (20,) + shape
    np.testing.assert_array_equal(y, load_ood(kind, ds, n=20, seed=1)[1])


def test_real_ood_is_converted_to_the_id_shape(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=5, n_test=30)
    for shape in [(8, 8, 1), (32, 32, 3), (28, 28, 1)]:
        name, x = load_ood("mnist", tiny_dataset(shape), data_dir=tmp_path, n=10, seed=2)
        assert name == "mnist" and x.shape == (10,) + shape and x.dtype == np.float32
        assert x.min() >= 0 and x.max() <= 1
    a = load_ood("mnist", tiny_dataset(), data_dir=tmp_path, n=10, seed=2)[1]
    np.testing.assert_array_equal(a, load_ood("mnist", tiny_dataset(), data_dir=tmp_path, n=10, seed=2)[1])
    # digits as OOD for a colour set: grey -> RGB, 8x8 -> 32x32
    name, x = load_ood("digits", tiny_dataset((32, 32, 3)), n=4)
    assert x.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_default_ood_mapping(tmp_path):
    assert default_ood("digits", data_dir=tmp_path) == "noise"  # no Fashion-MNIST there
    assert default_ood("cifar10", data_dir=tmp_path) == "noise"
    make_idx_set(tmp_path / "fashion_mnist", train=False, n_test=6)
    make_idx_set(tmp_path / "mnist", n_test=6)
    assert default_ood("digits", data_dir=tmp_path) == "fashion_mnist"
    assert default_ood("mnist", data_dir=tmp_path) == "fashion_mnist"
    assert default_ood("fashion_mnist", data_dir=tmp_path) == "mnist"
    assert default_ood("npz:whatever.npz") == "noise"
    name, x = load_ood(None, load_dataset("digits"), data_dir=tmp_path)
    assert name == "fashion_mnist" and x.shape == (6, 8, 8, 1)
    with pytest.raises(QuteError, match="unknown dataset"):
        default_ood("imagenet")


def test_ood_errors(tmp_path):
    ds = load_dataset("digits")
    with pytest.raises(QuteError) as e:
        load_ood("cats", ds)
    assert "noise" in str(e.value) and "fashion_mnist" in str(e.value)
    with pytest.raises(QuteError, match="x_ood"):
        load_ood("npz", ds)
    with pytest.raises(QuteError, match="positive integer"):
        load_ood("noise", ds, n=0)
    with pytest.raises(QuteError, match="mnist"):
        load_ood("mnist", ds, data_dir=tmp_path)


def test_npz_path_as_ood(tmp_path):
    spec = _save(tmp_path / "o.npz", **_good_arrays(np.random.default_rng(3), shape=(12, 12, 3)))
    name, x = load_ood(spec, load_dataset("digits"))
    assert name == spec and x.shape == (8, 8, 8, 1)
