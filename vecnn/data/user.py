"""The user's own data: ``.npz`` files, ``.npy`` pairs, CSV with a label column; and splits.

``load_arrays`` returns ``(X, y)``: ``X`` float32 with samples in rows (any per-sample shape),
``y`` int64 class labels ``(n,)``. Every problem is a ``ValueError`` naming the file and what is
wrong: mismatched lengths, non-numeric cells (row and column), missing or non-integer labels.
Nothing is unpickled (``allow_pickle=False``).
"""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from ..backend import DTYPE
from ..errors import check_finite

#: keys looked for in an ``.npz``, in order (first match wins)
X_KEYS = ("x", "X", "images", "data", "features", "inputs")
Y_KEYS = ("y", "Y", "labels", "label", "targets", "target")


def load_arrays(x_path, y_path=None, label_column="label"):
    """Load your own data as ``(X, y)``.

    Parameters
    ----------
    x_path : str or Path
        * ``.npz``: one file holding both arrays, under keys ``x``/``X``/``images``/``data``/
          ``features``/``inputs`` and ``y``/``Y``/``labels``/``label``/``targets``/``target``
          (or exactly two arrays, the first taken as X when the names say nothing).
        * ``.npy``: the samples; the labels come from ``y_path``, else from a sibling file:
          ``X.npy`` -> ``y.npy``, ``X_train.npy`` -> ``y_train.npy``, ``foo_x.npy`` ->
          ``foo_y.npy``, ``foo.npy`` -> ``foo_y.npy``.
        * ``.csv``: one sample per row, the label in column ``label_column``, every other column a
          numeric feature. A header row is detected (a first row with a non-numeric cell).
    y_path : str or Path, optional
        Labels ``.npy`` for an ``.npy`` ``x_path``.
    label_column : str or int
        CSV only: the label column's header name, or its index (negative counts from the end;
        a string of digits is an index when no header cell has that name).

    Returns
    -------
    X : float32 ``(n, ...)``;  y : int64 ``(n,)``
    """
    x_path = Path(x_path)
    if not x_path.is_file():
        raise ValueError(f"{x_path}: no such file")
    suffix = x_path.suffix.lower()
    if suffix in (".npz", ".csv") and y_path is not None:
        raise ValueError(f"{x_path}: a {suffix} file holds its own labels; do not pass labels ({y_path})")
    if suffix == ".npz":
        X, y, where = *_read_npz(x_path), str(x_path)
    elif suffix == ".npy":
        y_path = Path(y_path) if y_path is not None else _sibling_labels(x_path)
        X, y, where = _read_npy(x_path), _read_npy(y_path), f"{x_path} and {y_path}"
    elif suffix in (".csv", ".txt"):
        X, y = read_csv(x_path, label_column)
        where = str(x_path)
    else:
        raise ValueError(f"{x_path}: unknown data format {suffix or '(no suffix)'!r}; "
                         f"expected .npz, .npy (with labels) or .csv")
    return _check(X, y, where)


# -- .npz / .npy --------------------------------------------------------------------------------
def _np_load(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:          # object arrays need pickle: refused
        raise ValueError(f"{path}: cannot be read without unpickling ({e}); save plain numeric arrays") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable NumPy file ({e})") from None


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    a = _np_load(path)
    if not isinstance(a, np.ndarray):
        a.close()
        raise ValueError(f"{path}: is an .npz archive, expected a single .npy array")
    return a


def _read_npz(path: Path):
    f = _np_load(path)
    if isinstance(f, np.ndarray):
        raise ValueError(f"{path}: is a single .npy array, expected an .npz archive of X and y")
    with f:
        keys = list(f.files)
        xk = next((k for k in X_KEYS if k in keys), None)
        yk = next((k for k in Y_KEYS if k in keys), None)
        if (xk is None or yk is None) and len(keys) == 2 and xk is None and yk is None:
            xk, yk = keys
        if xk is None or yk is None:
            raise ValueError(f"{path}: expected arrays named {'/'.join(X_KEYS)} and "
                             f"{'/'.join(Y_KEYS)}; the file holds {keys}")
        try:
            return f[xk], f[yk]
        except ValueError as e:
            raise ValueError(f"{path}: cannot be read without unpickling ({e})") from None


def _sibling_labels(x_path: Path) -> Path:
    stem, parent = x_path.stem, x_path.parent
    candidates = []
    if stem[:1] in ("X", "x"):
        candidates.append("y" + stem[1:])
    for sep in ("_", "-", "."):
        for xs in ("x", "X"):
            if stem.endswith(sep + xs):
                candidates.append(stem[:-1] + "y")
    candidates.append(stem + "_y")
    for c in dict.fromkeys(candidates):
        if (parent / (c + ".npy")).is_file():
            return parent / (c + ".npy")
    tried = ", ".join(c + ".npy" for c in dict.fromkeys(candidates))
    raise ValueError(f"{x_path}: no labels given and none found next to it (looked for {tried}); "
                     f"pass the labels file (--labels FILE)")


# -- CSV -----------------------------------------------------------------------------------------
def read_csv(path, label_column="label"):
    """Read a CSV of numeric features and one integer label column; returns float ``X``
    ``(n, features)`` and ``y`` (checked by ``load_arrays``)."""
    path = Path(path)
    raw = path.read_text(encoding="utf-8-sig")
    text = raw.lstrip("\r\n \t")                              # drop leading blank lines
    offset = raw[:len(raw) - len(text)].count("\n")            # ... but count them in line numbers
    first = next(csv.reader(io.StringIO(text)), None)
    if first is None:
        raise ValueError(f"{path}: the file is empty")
    header = None if all(_is_number(c) for c in first) else [c.strip() for c in first]
    ncols = len(first)
    col = _label_index(path, label_column, header, ncols)
    name = (lambda j: repr(header[j])) if header else (lambda j: str(j))
    try:                                               # fast path: NumPy's C parser
        with warnings.catch_warnings():                # "no data" is reported below, as an error
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2,
                               skiprows=1 if header else 0, quotechar='"', comments=None)
    except ValueError:                                 # find the offending cell, slowly
        table = _slow_parse(path, text, header is not None, ncols, col, name, offset)
    if len(table) == 0:
        raise ValueError(f"{path}: no data rows")
    labels = table[:, col]
    if np.isnan(labels).any():
        r = int(np.flatnonzero(np.isnan(labels))[0])
        raise ValueError(f"{path}: missing label at data row {r + 1} (column {name(col)})")
    X = np.delete(table, col, axis=1)
    if np.isnan(X).any():
        r, j = (int(i) for i in np.argwhere(np.isnan(X))[0])
        j += j >= col
        raise ValueError(f"{path}: missing or NaN value at data row {r + 1}, column {name(j)}")
    return X, labels


def _slow_parse(path, text, has_header, ncols, col, name, offset=0):
    """Cell by cell, to say exactly which row and column is wrong."""
    out = []
    rows = csv.reader(io.StringIO(text))
    seen_first = False
    for lineno, row in enumerate(rows, 1 + offset):
        if not any(c.strip() for c in row):
            continue
        if not seen_first:
            seen_first = True
            if has_header:
                continue
        if len(row) != ncols:
            raise ValueError(f"{path}: line {lineno} has {len(row)} columns, expected {ncols}")
        values = []
        for j, cell in enumerate(row):
            cell = cell.strip()
            if cell == "":
                what = "missing label" if j == col else "missing value"
                raise ValueError(f"{path}: {what} at line {lineno}, column {name(j)}")
            try:
                values.append(float(cell))
            except ValueError:
                what = "label" if j == col else "value"
                raise ValueError(f"{path}: non-numeric {what} {cell!r} at line {lineno}, "
                                 f"column {name(j)}") from None
        out.append(values)
    return np.asarray(out, dtype=np.float64).reshape(-1, ncols)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _label_index(path, label_column, header, ncols) -> int:
    if isinstance(label_column, str):
        if header and label_column in header:
            return header.index(label_column)
        try:
            label_column = int(label_column)
        except ValueError:
            cols = f"its columns are {header}" if header else "it has no header row; pass the column index"
            raise ValueError(f"{path}: no label column {label_column!r}; {cols}") from None
    if isinstance(label_column, bool) or not isinstance(label_column, (int, np.integer)):
        raise ValueError(f"label_column: expected a column name or index, received {label_column!r}")
    if not -ncols <= label_column < ncols:
        raise ValueError(f"{path}: label column index {label_column} out of range for {ncols} columns")
    if ncols < 2:
        raise ValueError(f"{path}: expected at least one feature column besides the label, found {ncols} column")
    return int(label_column) % ncols


# -- checks shared by every format --------------------------------------------------------------
def _check(X, y, where):
    X, y = np.asarray(X), np.asarray(y)
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{where}: X must be numeric, found dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"{where}: X must have a sample axis and features, shape (n, ...), "
                         f"found shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be one integer per sample, shape (n,), found shape {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{where}: X has {len(X)} samples but y has {len(y)} labels")
    if len(X) == 0:
        raise ValueError(f"{where}: no samples")
    if y.dtype.kind == "f":
        if np.isnan(y).any():
            raise ValueError(f"{where}: missing label (NaN) at sample {int(np.flatnonzero(np.isnan(y))[0])}")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise ValueError(f"{where}: labels must be integer class indices; sample {i} has {y[i]!r}")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{where}: labels must be integer class indices, found dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{where}: labels must be class indices >= 0; found {y.min()}")
    X = np.ascontiguousarray(X, dtype=DTYPE)
    check_finite(f"{where}: X", X)
    return X, y.astype(np.int64)


# -- splits ----------------------------------------------------------------------------------
def train_test_split(X, y, test_fraction=0.2, seed=0, stratify=False):
    """Split ``(X, y)`` at random into ``(X_train, y_train, X_test, y_test)``.

    The same order as ``vecnn.data.load`` returns (not scikit-learn's). Use it for a
    validation split too: ``X_tr, y_tr, X_val, y_val = train_test_split(X, y, 0.1, seed=0)``.

    Parameters
    ----------
    test_fraction : float in (0, 1)
        Share of samples in the second part: ``round(n * test_fraction)``, at least 1 and at
        most n - 1.
    seed : int or numpy.random.Generator
    stratify : bool
        Keep every class's share the same in both parts (each class split by the fraction).
    """
    X = X if hasattr(X, "shape") else np.asarray(X)
    y = np.asarray(y)
    n = len(y)
    if len(X) != n:
        raise ValueError(f"train_test_split: X has {len(X)} samples but y has {n}")
    if not (isinstance(test_fraction, (int, float, np.floating)) and 0 < test_fraction < 1):
        raise ValueError(f"train_test_split: expected 0 < test_fraction < 1, received {test_fraction!r}")
    if n < 2:
        raise ValueError(f"train_test_split: need at least 2 samples, received {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    perm = rng.permutation(n)                                   # (N,)
    if stratify:
        order = perm[np.argsort(y[perm], kind="stable")]        # grouped by class, shuffled within
        classes, start, counts = np.unique(y[order], return_index=True, return_counts=True)
        rank = np.arange(n) - np.repeat(start, counts)          # position within its class
        n_test_c = np.round(counts * test_fraction).astype(np.int64)
        is_test = rank < np.repeat(n_test_c, counts)
        test, train = np.sort(order[is_test]), np.sort(order[~is_test])
        if len(test) == 0 or len(train) == 0:
            raise ValueError(f"train_test_split: test_fraction={test_fraction} leaves one part "
                             f"empty with stratify=True; use a larger fraction or stratify=False")
    else:
        n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return X[train], y[train], X[test], y[test]
