"""A careful reader for the IDX format of MNIST-style files, plain or gzip-compressed.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then ``NDIM`` big-endian uint32
dimensions, then the data, big-endian, row-major. The reader trusts nothing it has not checked:
it reads the header first, checks the magic, type code and dimensions (their element count
within ``vecnn.limits.MAX_ELEMENTS``), computes how many bytes the header promises (refusing
more than ``max_bytes``), and then reads at most that many, in
bounded chunks, so memory grows only with data that is really there. A forged header or a gzip
bomb is a ``ValueError``, never a huge allocation. The file must hold exactly the promised
bytes: a short file or trailing bytes are errors too.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..limits import check_shape

#: IDX type code -> big-endian dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Refuse files whose header promises more data than this (2 GiB).
MAX_BYTES = 2 << 30
_CHUNK = 1 << 22  # read 4 MiB at a time: memory follows the data actually present
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (plain, or gzip-compressed: detected from its first bytes).

    Parameters
    ----------
    path : str or Path
    max_bytes : int
        Refuse a header that promises more data bytes than this (default 2 GiB).

    Returns
    -------
    ndarray of the header's shape, in native byte order (uint8 for MNIST-style files).

    Raises
    ------
    ValueError
        Naming the file and what is wrong: bad magic number, unknown type code, no
        dimensions, too much data promised, truncated data, trailing bytes, corrupt gzip.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such IDX file") from None
    with f:
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
        kind = "gzip-compressed IDX file" if compressed else "IDX file"
        try:
            return _read(stream, path, kind, max_bytes, None if compressed else path.stat().st_size)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise ValueError(f"{path}: the gzip data is truncated or corrupt ({e})") from None


def _read(f, path, kind, max_bytes, file_size):
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: only {len(head)} bytes, too short for an IDX header (truncated?)")
    zero, code, ndim = head[:2], head[2], head[3]
    if zero != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (magic number starts with {zero.hex()}, expected 0000)")
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (expected one of {known})")
    if ndim == 0:
        raise ValueError(f"{path}: the IDX header declares 0 dimensions")
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions declared, {len(raw) // 4} present")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))
    check_shape(f"{path}: the IDX header", shape)  # vecnn.limits: before any allocation
    dtype = np.dtype(IDX_TYPES[code])
    promised = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if promised > max_bytes:
        raise ValueError(
            f"{path}: the header promises shape {shape} of {dtype.name}, "
            f"{promised:,} bytes, more than the limit of {max_bytes:,} (forged or "
            f"not an IDX file?)"
        )
    header = 4 + 4 * ndim
    if file_size is not None and file_size != header + promised:
        # plain file: the size says it all before anything is read or allocated
        what = "truncated" if file_size < header + promised else "has trailing bytes"
        raise ValueError(
            f"{path}: {kind} {what}: shape {shape} of {dtype.name} needs "
            f"{header + promised:,} bytes, the file has {file_size:,}"
        )
    buf = bytearray()
    while len(buf) < promised:  # grows with the data present, not the promise
        chunk = f.read(min(_CHUNK, promised - len(buf)))
        if not chunk:
            break
        buf += chunk
    if len(buf) < promised:
        raise ValueError(
            f"{path}: {kind} truncated: shape {shape} of {dtype.name} needs {promised:,} data bytes, found {len(buf):,}"
        )
    if f.read(1):  # at most one more byte is ever decompressed here
        raise ValueError(
            f"{path}: {kind} has trailing bytes after the {promised:,} data bytes its header promises (shape {shape})"
        )
    data = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def write_idx(path, array, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``, or when
    ``compress`` says so). The inverse of :func:`read_idx`; handy for tests and exports."""
    path = Path(path)
    a = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    code = codes.get(a.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"write_idx: dtype {a.dtype} has no IDX type code (uint8, int8, int16, int32, float32, float64)"
        )
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"write_idx: expected 1 to 255 dimensions, received shape {a.shape}")
    body = (
        bytes([0, 0, code, a.ndim])
        + np.asarray(a.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(a, dtype=np.dtype(IDX_TYPES[code])).tobytes()
    )
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)
