"""The built-in digits: 1,797 8x8 handwritten digits, shipped inside the package.

Source: the UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak,
1998; UCI Machine Learning Repository, DOI 10.24432/C50P49; CC BY 4.0), the same images
scikit-learn's ``load_digits`` reads. ``DIGITS_LICENSE.txt`` next to this file holds the
citation; ``tools/make_digits.py`` rebuilds ``digits.npz`` from scikit-learn's copy.

The train/test split is fixed and stored in the file (never drawn from a random generator):
within each digit, in file order, every fifth image is a test image, which gives 1,442
training and 355 test images with every digit in the same proportion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backend import DTYPE

PATH = Path(__file__).with_name("digits.npz")
N_IMAGES = 1797
CLASS_NAMES = tuple(str(d) for d in range(10))


def load_digits(path=PATH):
    """The digits as ``(X_train, y_train, X_test, y_test)``.

    Returns
    -------
    X_train, X_test : float32 ``(n, 1, 8, 8)``, pixel count / 16, in [0, 1]
    y_train, y_test : int64 ``(n,)``, the digit 0..9

    Examples
    --------
    >>> from vecnn.data.digits import load_digits
    >>> X_train, y_train, X_test, y_test = load_digits()
    >>> X_train.shape, X_test.shape
    ((1442, 1, 8, 8), (355, 1, 8, 8))
    """
    images, labels, test = _read(Path(path))
    X = (images.astype(DTYPE) / DTYPE(16))[:, None]  # (N, 1, 8, 8)
    y = labels.astype(np.int64)
    return X[~test], y[~test], X[test], y[test]


def _read(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels, test = f["images"], f["labels"], f["test"]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(
            f"{path}: the built-in digits file is missing or damaged ({e}); "
            f"reinstall vecnn or rebuild it with tools/make_digits.py"
        ) from None
    expected = {
        "images": (images, (N_IMAGES, 8, 8), np.uint8),
        "labels": (labels, (N_IMAGES,), np.uint8),
        "test": (test, (N_IMAGES,), np.bool_),
    }
    for name, (a, shape, dtype) in expected.items():
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(
                f"{path}: {name!r} has shape {a.shape} and dtype {a.dtype}, "
                f"expected {shape} {np.dtype(dtype)}; the file is damaged"
            )
    if images.max() > 16 or labels.max() > 9:
        raise ValueError(f"{path}: values out of range (pixels 0..16, labels 0..9); the file is damaged")
    return images, labels, test
