"""Out-of-distribution sets: real datasets resized to the in-distribution shape, or synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qute.data.datasets import DATASETS, Dataset, Normalisation, canonical, digits_raw
from qute.data.images import minmax_per_image, seed_seq, to_shape
from qute.data.sources import ALIASES, as_images, candidate_sources, load_raw, read_npz
from qute.errors import QuteError

OOD_SYNTHETIC: tuple[str, ...] = ("noise", "blobs", "stripes")


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


def _available(name: str, data_dir=None) -> bool:
    """Whether the test split of ``name`` can be read locally (no network)."""
    if name == "digits" or name in OOD_SYNTHETIC:
        return True
    if name not in ALIASES:
        return False
    try:
        sources, _ = candidate_sources(name, data_dir)
        return any(s.has("test") for s in sources)
    except QuteError:
        return False


def default_ood(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The OOD set that goes with dataset ``name``.

    mnist <-> fashion_mnist, digits -> fashion_mnist, cifar10 <-> svhn, each
    when its test files are found locally (no download is tried here);
    otherwise the synthetic "noise".  ``npz:PATH`` datasets get "noise" (a
    loaded npz Dataset carrying ``x_ood`` uses it instead: see load_ood).
    """
    key = canonical(name)
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
        return minmax_per_image(1.0 / (1.0 + np.exp(-3.0 * z)))
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
        return minmax_per_image(img.astype(np.float32))
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
    rng = np.random.default_rng(seed_seq(seed, "ood", low))

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
        a = read_npz(path, ("x_test",))
        raw = as_images(a["x_test"], "x_test", path)
        if raw.dtype == np.uint8:
            images = raw.astype(np.float32) / 255.0
        else:
            lo, hi = float(raw.min()), float(raw.max())
            images = Normalisation.from_range(lo, hi).apply(raw) if hi > lo else np.zeros(raw.shape, np.float32)
        name = "npz:" + key[4:].strip()
    else:
        canon = canonical(key)
        if canon == "digits":
            raw, _ = digits_raw()
            images = raw / 16.0
        elif canon in ALIASES:
            _, (raw, _), _ = load_raw(canon, data_dir, need_train=False)
            images = raw.astype(np.float32) / 255.0
        else:
            raise QuteError(f"unknown OOD set {ood!r}; choose one of {_ood_names()}")
        name = canon

    if n is not None and n < len(images):
        images = images[np.sort(rng.choice(len(images), size=int(n), replace=False))]
    return name, to_shape(images, shape)
