#!/usr/bin/env python3
"""Build ``vecnn/data/digits.npz`` from scikit-learn's copy of the UCI digits (run once).

The UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998;
CC BY 4.0; DOI 10.24432/C50P49) ships with scikit-learn as ``sklearn/datasets/data/digits.csv.gz``:
1,797 rows of 64 pixel counts (0..16, row-major 8x8) followed by the digit. This script reads
that file, checks it, and writes the array file vecnn ships, so vecnn never needs scikit-learn
at run time:

    images  uint8 (1797, 8, 8)   pixel counts 0..16
    labels  uint8 (1797,)        digits 0..9
    test    bool  (1797,)        the fixed test split

The split needs no random generator (so it never depends on a NumPy version): within each
digit, in file order, every fifth image (positions 4, 9, 14, ... of that digit) is a test
image. That gives a stratified split of 355 test and 1,442 training images.

The output is byte-for-byte reproducible (fixed zip timestamps, no pickles)::

    .venv/bin/python tools/make_digits.py [--csv PATH] [--out vecnn/data/digits.npz]
"""
from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np

N_IMAGES = 1797
TEST_EVERY = 5


def sklearn_csv() -> Path:
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, 65):
        raise ValueError(f"{path}: expected {N_IMAGES} rows of 65 numbers, found shape {table.shape}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16:
        raise ValueError(f"{path}: pixel counts outside 0..16")
    if set(np.unique(labels)) != set(range(10)):
        raise ValueError(f"{path}: labels are not the digits 0..9")
    return pixels.reshape(N_IMAGES, 8, 8).astype(np.uint8), labels.astype(np.uint8)


def test_mask(labels: np.ndarray) -> np.ndarray:
    """Within each class, in file order, every ``TEST_EVERY``-th sample is a test sample."""
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test[idx[TEST_EVERY - 1::TEST_EVERY]] = True
    return test


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` (a zip of ``.npy`` files) with fixed timestamps: same input, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1998, 7, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy.getvalue(), compresslevel=9)
    path.write_bytes(buf.getvalue())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=None, help="digits.csv.gz (default: scikit-learn's copy)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "vecnn" / "data" / "digits.npz")
    args = p.parse_args(argv)
    images, labels = read_csv(args.csv or sklearn_csv())
    test = test_mask(labels)
    write_npz(args.out, {"images": images, "labels": labels, "test": test})
    print(f"wrote {args.out}: {N_IMAGES} images, {int(test.sum())} test, {int((~test).sum())} train")


if __name__ == "__main__":
    main()
