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

The package's modules
    ``datasets``     the named datasets, :class:`Normalisation`, :class:`Dataset`,
                     npz datasets, loading and splitting (:func:`load_dataset`);
    ``sources``      where data lives (:func:`data_dirs`, system folders, the
                     online check) and file formats (:func:`read_idx`, raw loading);
    ``images``       seeds and linear resampling helpers;
    ``corruptions``  :data:`SEVERITIES`, :data:`CORRUPTIONS`, :func:`corrupt`;
    ``ood``          :data:`OOD_SYNTHETIC`, :func:`default_ood`, :func:`load_ood`.

This package re-exports their public API: ``from qute.data import load_dataset``.
"""

from __future__ import annotations

from qute.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from qute.data.datasets import DATASETS, Dataset, Normalisation, load_dataset
from qute.data.ood import OOD_SYNTHETIC, default_ood, load_ood
from qute.data.sources import data_dirs, read_idx

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
