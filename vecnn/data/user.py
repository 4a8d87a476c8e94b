"""The user's own data: ``.npz`` files, ``.npy`` pairs, CSV with a label column; and splits.

``load_arrays`` returns ``(X, y)``: ``X`` float32 with samples in rows (any per-sample shape),
``y`` int64 class labels ``(n,)``. Every problem is a ``ValueError`` naming the file and what is
wrong: mismatched lengths, non-numeric cells (row and column), missing or non-integer labels.

Files are distrusted: ``.npy`` and ``.npz`` are read by a careful reader of their own
(:func:`read_npy`, :class:`NpzArchive`) that checks each header (numeric dtype, a shape within
``vecnn.limits``, exactly the promised bytes present) before anything is allocated, and never
unpickles. Labels must be integers >= 0 that fit int64, and imply at most
``vecnn.limits.MAX_CLASSES`` classes. CSV files are read as UTF-8 (a byte order mark is allowed);
a file in another encoding (Latin-1, Windows-1252, UTF-16) is refused, naming the first byte that
is not UTF-8, rather than guessed at: any bytes decode as Latin-1, so a guess cannot be checked.
"""

from __future__ import annotations

import csv
import io
import lzma
import math
import os
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from ..backend import DTYPE
from ..errors import check_finite
from ..limits import check_classes, check_shape

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
    if not isinstance(x_path, (str, os.PathLike)) or not str(x_path):
        raise ValueError(f"load_arrays: expected the path of a data file, received {x_path!r}")
    x_path = Path(x_path)
    _check_is_file(x_path)
    suffix = x_path.suffix.lower()
    if suffix in (".npz", ".csv") and y_path is not None:
        raise ValueError(f"{x_path}: a {suffix} file holds its own labels; do not pass labels ({y_path})")
    if suffix == ".npz":
        (X, y), x_where, y_where = _read_npz(x_path), str(x_path), str(x_path)
    elif suffix == ".npy":
        y_path = Path(y_path) if y_path is not None else _sibling_labels(x_path)
        X, y, x_where, y_where = read_npy(x_path), read_npy(y_path), str(x_path), str(y_path)
    elif suffix in (".csv", ".txt"):
        X, y = read_csv(x_path, label_column)
        x_where, y_where = str(x_path), f"{x_path} (label column {label_column!r})"
    else:
        raise ValueError(
            f"{x_path}: unknown data format {suffix or '(no suffix)'!r}; expected .npz, .npy (with labels) or .csv"
        )
    return _check(X, y, x_where, y_where)


# -- .npy / .npz: one careful reader ------------------------------------------------------------
# NumPy's own np.load allocates whatever a header declares before it reads a byte of data, and
# its messages advise ``allow_pickle``. This reader checks the header first (numeric dtype, a
# shape within vecnn.limits, exactly the bytes the header promises present), then reads the data
# in bounded chunks, so memory follows the data that is really there. Nothing is unpickled.
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"
_CHUNK = 1 << 22  # read 4 MiB at a time
_DTYPE_KINDS = "biuf"  # bool, int, uint, float
# what malformed header text can make NumPy's header parser (ast.literal_eval) raise
_HEADER_ERRORS = (
    ValueError,
    SyntaxError,
    TypeError,
    KeyError,
    IndexError,
    RecursionError,
    MemoryError,
    OverflowError,
    UnicodeDecodeError,
    EOFError,
    tokenize.TokenError,
)
# what a damaged, truncated or unusual zip archive can raise while it is read
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    lzma.LZMAError,
    struct.error,
    IndexError,
    KeyError,
    UnicodeDecodeError,
)


def read_npy(path) -> np.ndarray:
    """Read one numeric ``.npy`` array safely: the header is checked (numeric dtype, shape within
    ``vecnn.limits``, exactly the promised bytes in the file) before anything is allocated.
    Every problem is a ``ValueError`` naming the file."""
    path = Path(path)
    _check_is_file(path)
    with _open(path) as f:
        start = f.read(len(_NPY_MAGIC))
        if start[:2] == _ZIP_MAGIC:
            raise ValueError(f"{path}: is an .npz archive (a zip file), expected a single .npy array")
        f.seek(0)
        return _read_array(f, str(path), os.fstat(f.fileno()).st_size)


def read_npz(path, keys=None) -> dict:
    """Read the arrays of an ``.npz`` archive (only ``keys``, when given; names as ``np.load``
    gives them, without ``.npy``), each member checked as :func:`read_npy` checks a file."""
    path = Path(path)
    with NpzArchive(path) as z:
        return {k: z.read(k) for k in (z.keys if keys is None else keys)}


class NpzArchive:
    """An ``.npz`` archive opened for careful reading: ``keys`` lists its arrays (in stored
    order), ``read(key)`` reads one. Use as a context manager."""

    def __init__(self, path):
        self.path = path = Path(path)
        _check_is_file(path)
        with _open(path) as f:
            start = f.read(len(_NPY_MAGIC))
        if start == _NPY_MAGIC:
            raise ValueError(f"{path}: is a single .npy array, expected an .npz archive (a zip of arrays)")
        if not start:
            raise ValueError(f"{path}: the file is empty, expected an .npz archive")
        if start[:2] != _ZIP_MAGIC:
            raise ValueError(f"{path}: not an .npz archive (it is not a zip file)")
        try:
            self._zip = zipfile.ZipFile(path)
            members = [i for i in self._zip.infolist() if i.filename and not i.filename.endswith("/")]
        except (*_ZIP_ERRORS, ValueError) as e:
            raise ValueError(
                f"{path}: not a readable .npz archive: the zip file is damaged or truncated ({_detail(e)})"
            ) from None
        self._members = {}
        for info in members:
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._members[key] = info
        self.keys = list(self._members)

    def read(self, key) -> np.ndarray:
        info = self._members.get(key)
        if info is None:
            raise ValueError(f"{self.path}: holds no array {key!r}; it holds {self.keys}")
        where = f"{self.path} (array {key!r})"
        try:
            with self._zip.open(info) as f:
                return _read_array(f, where, info.file_size)
        except _ZIP_ERRORS as e:
            raise ValueError(f"{where}: the archive is damaged or truncated ({_detail(e)})") from None
        except ValueError as e:  # ours name the file; zipfile's own do not
            if str(e).startswith(where):
                raise
            raise ValueError(f"{where}: the archive is damaged or truncated ({_detail(e)})") from None

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_is_file(path: Path) -> None:
    try:
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        if path.is_dir():
            raise ValueError(f"{path}: is a directory, expected a file")
        if not path.is_file():
            raise ValueError(f"{path}: is not a regular file (a device, pipe or socket)")
    except OSError as e:  # a name too long, a folder not searchable, ...
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as e:
        raise ValueError(f"{path}: cannot be opened ({e.strerror or e})") from None


def _detail(e: BaseException) -> str:
    """An exception's text for a message: one short line, never NumPy's advice to unpickle."""
    text = " ".join(str(e).split()) or type(e).__name__
    if "pickle" in text:
        return type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_array(f, where: str, size: int) -> np.ndarray:
    """Read one ``.npy`` from the binary stream ``f`` holding ``size`` bytes in all."""
    try:
        version = npformat.read_magic(f)
    except ValueError:
        raise ValueError(
            f"{where}: not a NumPy .npy file (it does not start with NumPy's magic bytes \\x93NUMPY)"
        ) from None
    if version not in ((1, 0), (2, 0)):
        raise ValueError(
            f"{where}: .npy format version {version[0]}.{version[1]} is not read by "
            f"vecnn (NumPy writes numeric arrays as version 1.0 or 2.0)"
        )
    reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
    try:
        shape, fortran_order, dtype = reader(f)
    except _HEADER_ERRORS as e:
        raise ValueError(f"{where}: the .npy header is malformed ({_detail(e)})") from None
    if dtype.hasobject:
        raise ValueError(
            f"{where}: holds Python objects (dtype object); reading them would mean "
            f"unpickling, which vecnn never does: save plain numeric arrays"
        )
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(
            f"{where}: holds {dtype} values; vecnn reads numeric arrays only (integers, floats or booleans)"
        )
    shape = check_shape(where, shape)
    n = math.prod(shape)
    nbytes = n * dtype.itemsize
    present = size - f.tell()
    if present != nbytes:
        what = "truncated" if present < nbytes else "has trailing bytes"
        raise ValueError(
            f"{where}: {what}: its header declares shape {shape} of {dtype}, "
            f"{nbytes:,} data bytes, and {present:,} are present"
        )
    a = np.empty(n, dtype)
    buf = memoryview(a.view(np.uint8))  # type: ignore[arg-type]  # numpy's stubs: ndarray is a buffer
    got = 0
    while got < nbytes:  # pages are touched only as real data arrives
        k = f.readinto(buf[got : got + _CHUNK])
        if not k:
            break
        got += k
    if got < nbytes:
        raise ValueError(f"{where}: truncated: shape {shape} of {dtype} needs {nbytes:,} data bytes, found {got:,}")
    if f.read(1):
        raise ValueError(f"{where}: has trailing bytes after the {nbytes:,} data bytes its header declares")
    if dtype.kind == "b":
        a = a.view(np.uint8) != 0  # any byte but 0 is True, as NumPy reads it
    elif not dtype.isnative:
        a = a.astype(dtype.newbyteorder("="))
    return a.reshape(shape[::-1]).T if fortran_order else a.reshape(shape)


def _read_npz(path: Path):
    """``(X, y)`` from an ``.npz``, choosing the arrays by name (see :func:`load_arrays`)."""
    with NpzArchive(path) as z:
        keys = z.keys
        if not keys:
            raise ValueError(f"{path}: the .npz archive is empty (it holds no arrays)")
        xk = next((k for k in X_KEYS if k in keys), None)
        yk = next((k for k in Y_KEYS if k in keys), None)
        if xk is None and yk is None and len(keys) == 2:
            xk, yk = keys
        if xk is None or yk is None:
            raise ValueError(
                f"{path}: expected arrays named {'/'.join(X_KEYS)} and {'/'.join(Y_KEYS)}; the file holds {keys}"
            )
        return z.read(xk), z.read(yk)


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
    raise ValueError(
        f"{x_path}: no labels given and none found next to it (looked for {tried}); "
        f"pass the labels file (--labels FILE)"
    )


# -- CSV -----------------------------------------------------------------------------------------
def read_csv(path, label_column="label"):
    """Read a CSV of numeric features and one integer label column; returns float ``X``
    ``(n, features)`` and ``y`` (checked by ``load_arrays``)."""
    path = Path(path)
    _check_is_file(path)
    raw = _decode(path, _read_bytes(path))
    if "\r" in raw:  # Windows and old Mac line ends
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = raw.lstrip("\r\n \t")  # drop leading blank lines
    offset = raw[: len(raw) - len(text)].count("\n")  # ... but count them in line numbers
    try:
        first = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as e:
        raise ValueError(f"{path}: line {1 + offset}: {_detail(e)}") from None
    if first is None:
        raise ValueError(f"{path}: the file is empty")
    header = None if all(_is_number(c) for c in first) else [c.strip() for c in first]
    ncols = len(first)
    col = _label_index(path, label_column, header, ncols)
    name = (lambda j: repr(header[j])) if header else (lambda j: str(j))
    try:  # fast path: NumPy's C parser
        with warnings.catch_warnings():  # "no data" is reported below, as an error
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(
                io.StringIO(text),
                delimiter=",",
                dtype=np.float64,
                ndmin=2,
                skiprows=1 if header else 0,
                quotechar='"',
                comments=None,
            )
        if table.size and table.shape[1] != ncols:  # rows agree with each other, not with the first
            raise ValueError
    except ValueError:  # find the offending cell, slowly
        table = _slow_parse(path, text, header is not None, ncols, col, name, offset)
    if len(table) == 0:
        raise ValueError(f"{path}: no data rows")
    labels = table[:, col]
    if np.isnan(labels).any():
        r = int(np.flatnonzero(np.isnan(labels))[0])
        raise ValueError(f"{path}: missing label at data row {r + 1} (column {name(col)})")
    X = np.delete(table, col, axis=1)
    bad = ~np.isfinite(X)
    if bad.any():
        r, j = (int(i) for i in np.argwhere(bad)[0])
        what = "missing or NaN value" if np.isnan(X[r, j]) else f"infinite value ({X[r, j]})"
        j += j >= col
        raise ValueError(f"{path}: {what} at data row {r + 1}, column {name(j)}")
    return X, labels


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None


def _decode(path: Path, data: bytes) -> str:
    """The text of a CSV file: UTF-8 (with or without a byte order mark), nothing else."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ValueError(f"{path}: is UTF-16 text; vecnn reads CSV files as UTF-8: save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ValueError(f"{path}: holds a NUL byte at line {line}: a binary file, not CSV text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} is not "
            f"valid UTF-8 (a Latin-1 or Windows-1252 file?); vecnn reads CSV files as "
            f"UTF-8: save it as UTF-8"
        ) from None


def _slow_parse(path, text, has_header, ncols, col, name, offset=0):
    """Cell by cell, to say exactly which row and column is wrong."""
    out = []
    rows = csv.reader(io.StringIO(text))
    seen_first = False
    lineno = offset
    try:
        for row in rows:
            lineno = rows.line_num + offset
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
                    raise ValueError(
                        f"{path}: non-numeric {what} {_short(cell)} at line {lineno}, column {name(j)}"
                    ) from None
            out.append(values)
    except csv.Error as e:  # a field past csv's size limit, a broken quote, ...
        raise ValueError(f"{path}: line {rows.line_num + offset}: {_detail(e)}") from None
    return np.asarray(out, dtype=np.float64).reshape(-1, ncols)


def _short(cell: str) -> str:
    """A cell for a message: quoted, and cut short when it is long."""
    return repr(cell) if len(cell) <= 40 else repr(cell[:37]) + f"... ({len(cell):,} characters)"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _label_index(path, label_column, header, ncols) -> int:
    if ncols < 2:
        cols = f" ({header[0]!r})" if header else ""
        raise ValueError(
            f"{path}: has no feature columns: it has {ncols} column{cols}, expected "
            f"a label column and at least one feature column"
        )
    if isinstance(label_column, str):
        if header and label_column in header:
            if header.count(label_column) > 1:
                where = ", ".join(str(i) for i, h in enumerate(header) if h == label_column)
                raise ValueError(
                    f"{path}: {header.count(label_column)} columns are named {label_column!r} "
                    f"(columns {where}); which one holds the labels? Rename the others or "
                    f"give the label column's index"
                )
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
    return int(label_column) % ncols


# -- checks shared by every format --------------------------------------------------------------
_INT64_MAX = np.iinfo(np.int64).max


def _check(X, y, x_where, y_where=None):
    """``X`` as float32 ``(n, ...)`` and ``y`` as int64 ``(n,)``, or a ``ValueError`` naming the
    file (``x_where`` for the samples, ``y_where`` for the labels) and what is wrong."""
    y_where = x_where if y_where is None else y_where
    both = x_where if y_where == x_where else f"{x_where} and {y_where}"
    X, y = np.asarray(X), np.asarray(y)
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{x_where}: X must be numeric, found dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"{x_where}: X must have a sample axis and features, shape (n, ...), found shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{y_where}: labels must be one integer per sample, shape (n,), found shape {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{both}: X has {len(X)} samples but y has {len(y)} labels")
    if len(X) == 0:
        raise ValueError(f"{both}: no samples")
    if X.size == 0:
        raise ValueError(f"{x_where}: each sample holds no values (X has shape {X.shape})")
    y = _check_labels(y, y_where)
    return to_float32(X, f"{x_where}: X"), y


def to_float32(X: np.ndarray, where: str) -> np.ndarray:
    """``X`` as C-contiguous float32, refusing NaN, Inf and values beyond float32's range
    (which would become Inf), naming ``where`` and the index of the first."""
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = np.ascontiguousarray(X, dtype=DTYPE)
    try:
        check_finite(where, X32)
    except ValueError:
        if X.dtype.kind == "f" and X.dtype.itemsize > 4:  # finite, but not as float32
            big = np.isfinite(X) & ~np.isfinite(X32)
            if big.any():
                i = tuple(int(k) for k in np.argwhere(big)[0])
                raise ValueError(
                    f"{where}: value {float(X[i]):g} at index {i} is beyond the "
                    f"float32 range (about ±3.4e38) vecnn computes in"
                ) from None
        raise
    return X32


def _check_labels(y, where):
    """Labels as int64: integers >= 0 that fit int64, implying at most MAX_CLASSES classes."""
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "missing label (NaN)" if np.isnan(y[i]) else f"label {float(y[i])} is not a class index"
            raise ValueError(f"{where}: {what} at sample {i}")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise ValueError(f"{where}: labels must be integer class indices; sample {i} has {float(y[i])!r}")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{where}: labels must be integer class indices, found dtype {y.dtype}")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    lo, hi = int(y.argmin()), int(y.argmax())
    if y[lo] < 0:
        raise ValueError(f"{where}: labels must be class indices >= 0; sample {lo} has {_label(y[lo])}")
    if int(y[hi]) > _INT64_MAX:  # uint64 or float: would wrap negative as int64
        raise ValueError(
            f"{where}: label {_label(y[hi])} at sample {hi} does not fit a 64-bit "
            f"integer; labels must be class indices 0, 1, 2, ..."
        )
    check_classes(f"{where}: label {_label(y[hi])} at sample {hi}", int(y[hi]) + 1)
    return y.astype(np.int64)


def _label(v) -> str:
    return repr(float(v)) if isinstance(v, np.floating) else str(int(v))


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
    perm = rng.permutation(n)  # (N,)
    if stratify:
        order = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, shuffled within
        classes, start, counts = np.unique(y[order], return_index=True, return_counts=True)
        rank = np.arange(n) - np.repeat(start, counts)  # position within its class
        n_test_c = np.round(counts * test_fraction).astype(np.int64)
        is_test = rank < np.repeat(n_test_c, counts)
        test, train = np.sort(order[is_test]), np.sort(order[~is_test])
        if len(test) == 0 or len(train) == 0:
            raise ValueError(
                f"train_test_split: test_fraction={test_fraction} leaves one part "
                f"empty with stratify=True; use a larger fraction or stratify=False"
            )
    else:
        n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return X[train], y[train], X[test], y[test]
