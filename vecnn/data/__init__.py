"""Datasets for vecnn: built-in digits, MNIST-style sets, your own files, augmentation.

>>> import vecnn as vn
>>> X_train, y_train, X_test, y_test = vn.data.load("digits")   # built in, offline
>>> X_train.shape, X_test.shape
((1442, 1, 8, 8), (355, 1, 8, 8))

* ``load(name, root=None, download=False)``: ``digits`` (built in: the UCI optical
  handwritten digits, E. Alpaydin, C. Kaynak 1998, CC BY 4.0, DOI 10.24432/C50P49, with a
  fixed stratified split), ``fashion-mnist``, ``mnist``, ``kmnist``. Images come back as
  float32 NCHW in [0, 1], labels as int64. Where files are looked for: ``vecnn.data.named``.
* ``class_names(name)``, ``info(name)``, ``available()``, ``describe()``: what is known and found.
* ``read_idx(path)``: the IDX reader (plain or gzip), safe against forged headers and bombs.
* ``download(name)``: fetch from the official mirror, SHA-256 checked, atomic.
* ``load_arrays(path, labels=None, label_column="label")``: your ``.npz`` / ``.npy`` / CSV data
  (each header checked against ``vecnn.limits`` before anything is allocated, nothing
  unpickled, every problem a ``ValueError`` naming the file);
  ``train_test_split(X, y, test_fraction, seed)``.
* ``vecnn.data.inputs.read_inputs``: the inputs of ``vecnn predict`` (arrays and images, scaled
  by each image's real range).
* ``Augment(shift=2, flip=True)``: per-batch random shifts and flips, vectorized.
  Standardization is a layer: ``vecnn.layers.Standardize``.
"""

from .augment import Augment, random_flip, random_shift
from .digits import load_digits
from .downloads import DownloadError, download
from .idx import read_idx, write_idx
from .named import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    IncompleteDatasetError,
    available,
    cache_dir,
    class_names,
    describe,
    info,
    load,
    locate,
    search_path,
)
from .user import load_arrays, read_csv, train_test_split

__all__ = [
    "load",
    "class_names",
    "info",
    "available",
    "describe",
    "locate",
    "search_path",
    "cache_dir",
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "IncompleteDatasetError",
    "read_idx",
    "write_idx",
    "download",
    "DownloadError",
    "load_digits",
    "load_arrays",
    "read_csv",
    "train_test_split",
    "Augment",
    "random_shift",
    "random_flip",
]
