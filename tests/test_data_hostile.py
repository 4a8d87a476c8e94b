"""Hostile and broken data files: every one is a ValueError naming the file, decided before any
large allocation; on the command line, exit 2 with one line and no traceback.

Every hostile file is made here, in tmp_path. Covers issue 10 items 5-8 for data input: forged
.npy/.npz/IDX headers, 0-d/empty/non-zip/truncated files, pickled members, wrong dtypes, labels
that wrap or imply too many classes, non-UTF-8 and label-only CSVs, and `vecnn predict` inputs
(16-bit/float/32-bit images scaled by their real range, decompression bombs, huge input shapes).
"""

import io
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npformat

import vecnn as vn
from vecnn.data import load_arrays, read_idx
from vecnn.data.inputs import read_inputs
from vecnn.data.user import read_npy, read_npz

VECNN = [sys.executable, "-m", "vecnn.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# -- helpers that forge files -------------------------------------------------------------------
def npy_bytes(shape, descr="<f4", data=b"", fortran=False, version=(1, 0)) -> bytes:
    """A well-formed .npy header declaring ``shape`` of ``descr``, followed by ``data`` only."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    (npformat.write_array_header_1_0 if version == (1, 0) else npformat.write_array_header_2_0)(buf, header)
    return buf.getvalue() + data


def npz_bytes(members: dict) -> bytes:
    """A zip of raw member bytes (``name -> bytes``), as np.savez lays it out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def save_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def arr_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def refused(fn, path, match=None):
    """Call ``fn``; it must raise ValueError naming ``path`` (one line, never NumPy's advice to
    unpickle), matching ``match`` when given. Returns the message."""
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert str(path) in msg, msg
    assert "\n" not in msg and "allow_pickle" not in msg, msg
    if match is not None:
        import re

        assert re.search(match, msg), msg
    return msg


@pytest.fixture
def labels30(tmp_path):
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    return tmp_path / "y.npy"


def traced_peak(fn) -> int:
    """Peak bytes Python allocated while ``fn()`` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- item 5: sizes declared by a header are checked before anything is allocated -----------------
def test_npy_declaring_10_to_the_12_elements_is_refused_before_allocation(tmp_path, labels30):
    x = save_bytes(tmp_path / "X.npy", npy_bytes((10**6, 10**6), data=b"\0" * 64))
    peak = traced_peak(
        lambda: refused(lambda: load_arrays(x, labels30), x, r"1,000,000,000,000 elements.*VECNN_MAX_ELEMENTS")
    )
    assert peak < 1 << 20  # nothing near the declared size


def test_npz_member_declaring_huge_shape_is_refused(tmp_path):
    p = save_bytes(
        tmp_path / "d.npz",
        npz_bytes({"x.npy": npy_bytes((10**6, 10**6), "<f8", b"\0" * 80), "y.npy": arr_bytes(np.arange(3))}),
    )
    refused(lambda: load_arrays(p), p, r"array 'x'.*more than vecnn allows")


def test_header_promising_more_than_the_file_holds_reads_nothing(tmp_path, labels30):
    x = save_bytes(tmp_path / "X.npy", npy_bytes((30, 100_000), data=b"\0" * 100))
    peak = traced_peak(
        lambda: refused(lambda: load_arrays(x, labels30), x, r"truncated.*12,000,000 data bytes, and 100 are present")
    )
    assert peak < 1 << 20


def test_zip_member_whose_data_is_short_of_its_header(tmp_path):
    p = save_bytes(
        tmp_path / "d.npz",
        npz_bytes({"x.npy": npy_bytes((30, 4), data=b"\0" * 16), "y.npy": arr_bytes(np.arange(30) % 3)}),
    )
    refused(lambda: load_arrays(p), p, "truncated")


def test_idx_declaring_huge_dimensions(tmp_path):
    p = save_bytes(
        tmp_path / "train-images-idx3-ubyte",
        bytes([0, 0, 0x08, 3]) + np.array([10**9, 10**9, 4], ">u4").tobytes() + b"\0" * 16,
    )
    refused(lambda: read_idx(p), p, "more than vecnn allows")


# -- item 6: files that are not what they claim ----------------------------------------------------
def test_zero_d_npy(tmp_path, labels30):
    np.save(tmp_path / "X.npy", np.float32(3))
    refused(lambda: load_arrays(tmp_path / "X.npy", labels30), tmp_path / "X.npy", r"found shape \(\)")


def test_empty_npz(tmp_path):
    np.savez(tmp_path / "e.npz")
    refused(lambda: load_arrays(tmp_path / "e.npz"), tmp_path / "e.npz", "empty")


@pytest.mark.parametrize("content", [b"hello, this is text", b"", b"PK\x03\x04 broken zip"])
def test_npz_that_is_not_a_zip(tmp_path, content):
    p = save_bytes(tmp_path / "d.npz", content)
    refused(lambda: load_arrays(p), p)


def test_npz_and_npy_swapped(tmp_path, labels30):
    np.savez(tmp_path / "real.npz", x=np.zeros((30, 2)), y=np.arange(30) % 3)
    fake_npy = save_bytes(tmp_path / "X.npy", (tmp_path / "real.npz").read_bytes())
    refused(lambda: load_arrays(fake_npy, labels30), fake_npy, r"\.npz archive")
    fake_npz = save_bytes(tmp_path / "d.npz", arr_bytes(np.zeros((30, 2))))
    refused(lambda: load_arrays(fake_npz), fake_npz, r"single \.npy array")


@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros((30, 2), np.int64), r"shape \(n,\), found shape \(30, 2\)"),
        (np.int64(1), r"found shape \(\)"),
        (np.arange(29) % 3, "X has 30 samples but y has 29"),
    ],
)
def test_labels_of_the_wrong_shape_name_the_labels_file(tmp_path, y, match):
    np.save(tmp_path / "X.npy", np.zeros((30, 2), np.float32))
    np.save(tmp_path / "lab.npy", y)
    refused(lambda: load_arrays(tmp_path / "X.npy", tmp_path / "lab.npy"), tmp_path / "lab.npy", match)


def test_directory_device_and_unreadable_names_as_data(tmp_path):
    (tmp_path / "d.npz").mkdir()
    refused(lambda: load_arrays(tmp_path / "d.npz"), tmp_path / "d.npz", "is a directory")
    long = tmp_path / ("x" * 5000 + ".npz")
    refused(lambda: load_arrays(long), long, "cannot be read")
    if os.path.exists("/dev/null"):
        refused(lambda: load_arrays("/dev/null"), "/dev/null", "not a regular file")


# -- item 7: labels that would wrap or explode the class count -------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([2**63], np.uint64), "label 9223372036854775808 at sample 2 does not fit a 64-bit integer"),
        (np.array([2**64 - 1], np.uint64), "label 18446744073709551615 at sample 2 does not fit"),
        (np.array([1e30]), r"label 1e\+30 at sample 2 does not fit"),
        (
            np.array([10_000_000]),
            r"label 10000000 at sample 2: number of classes: 10,000,001 is more than "
            r"vecnn allows \(100,000\) \(set VECNN_MAX_CLASSES",
        ),
        (np.array([np.inf]), "label inf is not a class index at sample 2"),
        (np.array([-5]), "labels must be class indices >= 0; sample 2 has -5"),
    ],
)
def test_labels_that_do_not_fit(tmp_path, bad, match):
    y = np.concatenate([np.array([0, 1], bad.dtype), bad, np.zeros(27, bad.dtype)])
    np.savez(tmp_path / "d.npz", x=np.zeros((30, 2), np.float32), y=y)
    refused(lambda: load_arrays(tmp_path / "d.npz"), tmp_path / "d.npz", match)


def test_labels_up_to_the_limit_are_fine(tmp_path):
    y = np.array([0, 1, 99_999], np.uint64)
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=y)
    assert load_arrays(tmp_path / "d.npz")[1].tolist() == [0, 1, 99_999]


# -- dtypes, values, pickles -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((30, 2), np.complex64), "holds complex64 values; vecnn reads numeric arrays only"),
        (np.zeros((30, 2), "U3"), "holds <U3 values"),
        (np.zeros(30, [("a", "<f4"), ("b", "<i4")]), "numeric arrays only"),
        (np.zeros((30, 2), "datetime64[s]"), "numeric arrays only"),
    ],
)
def test_non_numeric_dtypes(tmp_path, x, match):
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    refused(lambda: load_arrays(tmp_path / "d.npz"), tmp_path / "d.npz", match)


class _Tripwire:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickled_members_are_never_unpickled(tmp_path):
    mark = tmp_path / "UNPICKLED"
    payload = pickle.dumps(np.array([_Tripwire(mark)] * 30, dtype=object), protocol=2)
    obj = npy_bytes((30,), "|O", payload)
    p = save_bytes(tmp_path / "d.npz", npz_bytes({"x.npy": obj, "y.npy": arr_bytes(np.arange(30) % 3)}))
    msg = refused(lambda: load_arrays(p), p, "Python objects.*unpickling, which vecnn never does")
    x = save_bytes(tmp_path / "X.npy", obj)
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    refused(lambda: load_arrays(x), x, "never does")
    assert not mark.exists() and "allow_pickle" not in msg


def test_values_beyond_float32_and_non_finite(tmp_path):
    X = np.zeros((30, 2))
    X[4, 1] = 1e300
    np.savez(tmp_path / "big.npz", x=X, y=np.arange(30) % 3)
    refused(
        lambda: load_arrays(tmp_path / "big.npz"),
        tmp_path / "big.npz",
        r"value 1e\+300 at index \(4, 1\) is beyond the float32 range",
    )
    X[4, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=X, y=np.arange(30) % 3)
    refused(lambda: load_arrays(tmp_path / "nan.npz"), tmp_path / "nan.npz", r"non-finite.*\(4, 1\)")


def test_empty_samples_and_empty_features(tmp_path):
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 3)), y=np.zeros(0, np.int64))
    refused(lambda: load_arrays(tmp_path / "none.npz"), tmp_path / "none.npz", "no samples")
    np.savez(tmp_path / "nofeat.npz", x=np.zeros((5, 0)), y=np.zeros(5, np.int64))
    refused(lambda: load_arrays(tmp_path / "nofeat.npz"), tmp_path / "nofeat.npz", "holds no values")


# -- malformed .npy files --------------------------------------------------------------------------
def test_non_npy_file_named_npy_never_mentions_pickle(tmp_path, labels30):
    x = save_bytes(tmp_path / "X.npy", b"name,age\nbob,3\n")
    msg = refused(lambda: load_arrays(x, labels30), x, "not a NumPy .npy file")
    assert "pickle" not in msg


@pytest.mark.parametrize(
    "header, match",
    [
        (b"{'descr': '<f4', 'fortran_order': False}", "header is malformed"),  # no shape
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 2), }", "header is malformed|negative"),
        (b"{'descr': 'nonsense', 'fortran_order': False, 'shape': (3,), }", "header is malformed"),
        (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "header is malformed"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (3," + b" " * 20000 + b"), }", "header is malformed"),
    ],
)
def test_malformed_headers(tmp_path, labels30, header, match):
    header = header + b" " * (-(len(header) + 11) % 64) + b"\n"
    x = save_bytes(
        tmp_path / "X.npy",
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 12
        if len(header) < 65536
        else b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header,
    )
    msg = refused(lambda: load_arrays(x, labels30), x, match)
    assert "pickle" not in msg


def test_unknown_format_version_and_trailing_bytes(tmp_path, labels30):
    data = bytearray(arr_bytes(np.zeros((30, 2), np.float32)))
    data[6] = 3
    x = save_bytes(tmp_path / "X.npy", bytes(data))
    refused(lambda: load_arrays(x, labels30), x, "format version 3.0")
    x = save_bytes(tmp_path / "X.npy", arr_bytes(np.zeros((30, 2), np.float32)) + b"extra")
    refused(lambda: load_arrays(x, labels30), x, "trailing bytes")


def test_every_truncation_of_an_npy_and_an_npz_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "good.npz", x=np.arange(60, dtype=np.float32).reshape(30, 2), y=np.arange(30) % 3)
    np.savez_compressed(tmp_path / "goodc.npz", x=np.arange(60, dtype=np.float32).reshape(30, 2), y=np.arange(30) % 3)
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    np.save(tmp_path / "good.npy", np.arange(60, dtype=np.float32).reshape(30, 2))
    for name in ("good.npz", "goodc.npz", "good.npy"):
        data = (tmp_path / name).read_bytes()
        bad = tmp_path / ("bad" + name[-4:])
        for cut in range(0, len(data), 7):
            bad.write_bytes(data[:cut])
            refused(lambda: load_arrays(bad, tmp_path / "y.npy" if name.endswith("npy") else None), bad)
        bad.write_bytes(data[:40] + bytes(b ^ 0x55 for b in data[40:80]) + data[80:])  # corrupt middle
        refused(lambda: load_arrays(bad, tmp_path / "y.npy" if name.endswith("npy") else None), bad)


def test_the_reader_reads_what_numpy_writes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f": rng.standard_normal((5, 3)).astype(np.float32),
        "be": np.arange(12, dtype=">i4").reshape(3, 4),
        "fortran": np.asfortranarray(rng.standard_normal((4, 6))),
        "b": rng.random((3, 3)) > 0.5,
        "u1": np.arange(7, dtype=np.uint8),
        "h": np.ones((2, 2), np.float16),
        "empty": np.zeros((0, 4)),
    }
    for k, a in arrays.items():
        np.save(tmp_path / f"{k}.npy", a)
        got = read_npy(tmp_path / f"{k}.npy")
        assert got.dtype == a.dtype.newbyteorder("=") and np.array_equal(got, a), k
    np.savez_compressed(tmp_path / "all.npz", **arrays)
    for k, got in read_npz(tmp_path / "all.npz").items():
        assert np.array_equal(got, arrays[k]), k
    big = np.zeros((10, 2**20 // 10 + 7), np.float64)  # more than one read chunk
    np.save(tmp_path / "big.npy", big)
    assert np.array_equal(read_npy(tmp_path / "big.npy"), big)


# -- item 8: CSV --------------------------------------------------------------------------------
def test_latin1_csv_names_the_file_line_and_encoding(tmp_path):
    p = save_bytes(tmp_path / "d.csv", "température,label\n1,0\n2,1\n".encode("latin-1"))
    refused(lambda: load_arrays(p), p, r"not UTF-8 text: byte 0xe9 at line 1.*Latin-1")
    p = save_bytes(tmp_path / "u16.csv", "a,label\n1,0\n".encode("utf-16"))
    refused(lambda: load_arrays(p), p, "UTF-16")
    p = save_bytes(tmp_path / "bom.csv", "\ufeffa,label\n1,0\n2,1\n".encode("utf-8"))  # UTF-8 with BOM: fine
    assert load_arrays(p)[1].tolist() == [0, 1]


def test_csv_line_endings(tmp_path):
    for name, text in [("crlf.csv", b"a,label\r\n1,0\r\n2,1\r\n"), ("cr.csv", b"a,label\r1,0\r2,1\r")]:
        X, y = load_arrays(save_bytes(tmp_path / name, text))
        assert X.tolist() == [[1], [2]] and y.tolist() == [0, 1], name


@pytest.mark.parametrize("text", ["label\n0\n1\n", "7\n8\n"])
def test_csv_with_only_a_label_column(tmp_path, text):
    p = save_bytes(tmp_path / "d.csv", text.encode())
    refused(lambda: load_arrays(p, label_column="label" if "label" in text else 0), p, "has no feature columns")


@pytest.mark.parametrize(
    "text, match",
    [
        (b"a,label\n1,0\n\x00\x01\x02,1\n", "NUL byte at line 3"),
        (b'a,label\n1,0\n"' + b"x" * 200_000 + b'",1\n', "line 3: field larger than field limit"),
        (b"a,label\n1,0\n" + b"9" * 400 + b",1\n", r"infinite value \(inf\) at data row 2, column 'a'"),
        (b"a,label\n1,0\n1e39,1\n", r"value 1e\+39 at index \(1, 0\) is beyond the float32 range"),
        (b"a,label\n1,2,0\n3,4,1\n", "line 2 has 3 columns, expected 2"),  # rows agree, header doesn't
        (b"a,label\n1,1e400\n", "label inf is not a class index"),
        (b"a,label\n1,0\n2,99999999999\n", "VECNN_MAX_CLASSES"),
        (b"a,label\n1,0\n2,0x1f\n", "non-numeric label '0x1f' at line 3"),
        (b"a,label\n" + b"x" * 100 + b",0\n", r"non-numeric value 'x{37}'\.\.\. \(100 characters\)"),
    ],
)
def test_csv_hostile_cells(tmp_path, text, match):
    p = save_bytes(tmp_path / "d.csv", text)
    refused(lambda: load_arrays(p), p, match)


# -- `vecnn predict` inputs ----------------------------------------------------------------------
def png_header_only(path, w, h):
    """A PNG whose header declares ``w`` x ``h`` pixels, with almost no data."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def digit():
    _, _, X_test, _ = vn.data.load("digits")
    return (X_test[0, 0] * 255).round().astype(np.uint8)  # (8, 8)


@pytest.mark.parametrize("size", [8, 28])
def test_8_and_16_bit_copies_of_one_image_give_the_same_input(tmp_path, digit, size):
    from PIL import Image

    img = np.kron(digit, np.ones((size // 8 + 1,) * 2, np.uint8))[:size, :size] if size != 8 else digit
    Image.fromarray(img).save(tmp_path / "d8.png")
    Image.fromarray(img.astype(np.uint16) * 257).save(tmp_path / "d16.png")  # the exact 16-bit copy
    assert Image.open(tmp_path / "d16.png").mode == "I;16"
    a, names = read_inputs([tmp_path / "d8.png", tmp_path / "d16.png"], [1, 8, 8])
    assert a.shape == (2, 1, 8, 8) and a.dtype == np.float32 and names == ["d8.png", "d16.png"]
    assert np.abs(a[0] - a[1]).max() < 1e-3 and a.max() <= 1 and a.min() >= 0
    if size == 8:
        assert np.abs(a[0, 0] - digit / 255).max() < 1e-6  # as before: pixel / 255
        assert a[1].max() > 0.9  # no longer clipped at 255/65535


def test_wide_and_transparent_image_modes_are_scaled_by_their_range(tmp_path):
    from PIL import Image

    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0 .. 252
    want = g / 255
    cases = {
        "f01.tif": Image.fromarray((g / 255).astype(np.float32)),  # F in [0, 1]
        "i16.tif": Image.fromarray(g.astype(np.uint16) * 257),  # I;16
        "i32.tif": Image.fromarray((g.astype(np.int64) * 16843009 - 2**31).astype(np.int32)),  # I, int32
        "rgba.png": Image.fromarray(g).convert("RGBA"),
        "la.png": Image.fromarray(g).convert("LA"),
        "p.png": Image.fromarray(g).convert("P"),
        "rgb.png": Image.fromarray(np.stack([g] * 3, -1)),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        a = read_inputs([tmp_path / name], [1, 8, 8])[0][0, 0]
        assert np.abs(a - want).max() < 1e-3, name
    Image.fromarray(g.astype(np.float32) * 10 + 100).save(tmp_path / "fbig.tif")  # F, 100 .. 2620
    a = read_inputs([tmp_path / "fbig.tif"], [1, 8, 8])[0][0, 0]
    assert a.min() == 0 and a.max() == 1 and np.abs(a - g / 252).max() < 1e-5
    clear = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent
    clear[..., 3] = 0
    clear[0, 0] = [0, 0, 0, 255]  # one opaque black pixel
    Image.fromarray(clear, "RGBA").save(tmp_path / "clear.png")
    a = read_inputs([tmp_path / "clear.png"], [1, 8, 8], invert=True)[0][0, 0]
    assert a[0, 0] == 1 and np.all(a.reshape(-1)[1:] == 0)  # over white, then inverted
    rgb = read_inputs([tmp_path / "i16.tif"], [3, 8, 8])[0]
    assert rgb.shape == (1, 3, 8, 8) and np.allclose(rgb[0, 0], rgb[0, 2])


def test_image_bombs_and_huge_model_shapes_are_refused_before_decoding(tmp_path, digit):
    from PIL import Image

    refused(
        lambda: read_inputs([png_header_only(tmp_path / "bomb.png", 100_000, 100_000)], [1, 8, 8]),
        tmp_path / "bomb.png",
        "decompression bomb",
    )
    refused(
        lambda: read_inputs([png_header_only(tmp_path / "big.png", 9000, 9000)], [1, 8, 8]),
        tmp_path / "big.png",
        r"9000x9000 pixels: 81,000,000 is more than vecnn allows.*VECNN_MAX_IMAGE_PIXELS",
    )
    Image.fromarray(digit).save(tmp_path / "d.png")
    for shape, match in [
        ([1, 100_000, 100_000], "10,000,000,000 elements"),
        ([3, 9000, 9000], "pixels per image"),
        ([1, 0, 8], "positive"),
        ([1, "8", 8], "integer sizes"),
        ("1x8x8", "list of sizes"),
        ([2, 8, 8], "2-channel"),
        ([64], "does not take images"),
    ]:
        with pytest.raises(ValueError, match=match):
            read_inputs([tmp_path / "d.png"], shape)


def test_broken_images(tmp_path, digit):
    from PIL import Image

    Image.fromarray(digit).save(tmp_path / "d.png")
    data = (tmp_path / "d.png").read_bytes()
    cases = {
        "trunc.png": data[: len(data) // 2],
        "text.png": b"not an image",
        "empty.png": b"",
        "header.png": data[:33],
    }
    for name, content in cases.items():
        p = save_bytes(tmp_path / name, content)
        refused(lambda: read_inputs([p], [1, 8, 8]), p)
    refused(lambda: read_inputs([tmp_path / "absent.png"], [1, 8, 8]), tmp_path / "absent.png", "no such file")
    Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(tmp_path / "nan.tif")
    refused(lambda: read_inputs([tmp_path / "nan.tif"], [1, 8, 8]), tmp_path / "nan.tif", "NaN or Inf")


def test_array_inputs_must_fit_the_model(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((1, 8, 8), np.float32))
    np.save(tmp_path / "batch.npy", np.ones((3, 1, 8, 8)))
    np.savez(tmp_path / "b.npz", labels=np.zeros(2), x=np.ones((2, 1, 8, 8), np.uint8))
    a, names = read_inputs([tmp_path / "one.npy", tmp_path / "batch.npy", tmp_path / "b.npz"], [1, 8, 8])
    assert a.shape == (6, 1, 8, 8) and a.dtype == np.float32
    assert names == ["one.npy[0]", "batch.npy[0]", "batch.npy[1]", "batch.npy[2]", "b.npz[0]", "b.npz[1]"]
    np.save(tmp_path / "flat.npy", np.zeros((5, 64), np.float32))
    refused(
        lambda: read_inputs([tmp_path / "flat.npy"], [1, 8, 8]),
        tmp_path / "flat.npy",
        r"shape \(5, 64\) does not fit the model, which takes one sample of shape \(1, 8, 8\) "
        r"or a batch \(n, 1, 8, 8\)",
    )
    for name, a, match in [
        ("e.npy", np.zeros((0, 1, 8, 8)), "no samples"),
        ("nan.npy", np.full((2, 1, 8, 8), np.nan), "non-finite"),
        ("z.npy", np.float32(1), "does not fit"),
        ("c.npy", np.zeros((2, 1, 8, 8), np.complex64), "numeric arrays only"),
    ]:
        np.save(tmp_path / name, a)
        refused(lambda: read_inputs([tmp_path / name], [1, 8, 8]), tmp_path / name, match)
    np.savez(tmp_path / "empty.npz")
    refused(lambda: read_inputs([tmp_path / "empty.npz"], [1, 8, 8]), tmp_path / "empty.npz", "empty")
    x = save_bytes(tmp_path / "huge.npy", npy_bytes((10**6, 1, 8, 8 * 10**6)))
    refused(lambda: read_inputs([x], [1, 8, 8]), x, "more than vecnn allows")


# -- the command line: exit 2, one line, no traceback ---------------------------------------------
def run(args):
    return subprocess.run(VECNN + [str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=120)


def assert_one_line_error(r, path):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(path) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    X, y, _, _ = vn.data.load("digits")
    model = vn.Sequential([vn.layers.Flatten(), vn.layers.Dense(64, 10)], seed=0)
    model.fit(X[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    model.metadata["input_shape"] = [1, 8, 8]
    path = tmp_path_factory.mktemp("model") / "m.vecnn"
    model.save(path)
    return path


def test_cli_train_on_hostile_data_files(tmp_path):
    cases = {
        "huge.npy": npy_bytes((10**6, 10**6), data=b"\0" * 64),
        "zero_d.npy": arr_bytes(np.float32(3)),
        "text.npy": b"this is not numpy",
        "empty.npz": npz_bytes({}),
        "notzip.npz": b"hello",
        "wrapping.npz": npz_bytes(
            {"x.npy": arr_bytes(np.zeros((3, 2))), "y.npy": arr_bytes(np.array([0, 1, 2**63], np.uint64))}
        ),
        "latin1.csv": "température,label\n1,0\n".encode("latin-1"),
        "labelonly.csv": b"label\n0\n1\n",
    }
    np.save(tmp_path / "y.npy", np.arange(3))
    for name, content in cases.items():
        p = save_bytes(tmp_path / name, content)
        labels = ["--labels", tmp_path / "y.npy"] if name.endswith(".npy") else []
        line = assert_one_line_error(run(["train", "--data", p, *labels, "--out", tmp_path / "run", "--quiet"]), p)
        assert "pickle" not in line
        assert not (tmp_path / "run" / "model.vecnn").exists()


def test_cli_evaluate_on_a_hostile_data_file(tmp_path, model_file):
    p = save_bytes(
        tmp_path / "d.npz",
        npz_bytes(
            {"x.npy": arr_bytes(np.zeros((3, 1, 8, 8), np.float32)), "y.npy": arr_bytes(np.array([0, 1, 10**9]))}
        ),
    )
    assert "VECNN_MAX_CLASSES" in assert_one_line_error(run(["evaluate", model_file, "--data", p]), p)


def test_cli_predict_on_hostile_inputs(tmp_path, model_file, digit):
    from PIL import Image

    bomb = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    assert_one_line_error(run(["predict", model_file, bomb]), bomb)
    np.save(tmp_path / "flat.npy", np.zeros((5, 64), np.float32))
    assert_one_line_error(run(["predict", model_file, tmp_path / "flat.npy"]), tmp_path / "flat.npy")
    Image.fromarray(digit).save(tmp_path / "d8.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "d16.png")
    r = run(["predict", model_file, tmp_path / "d8.png", tmp_path / "d16.png"])
    assert r.returncode == 0, r.stderr
    out8, out16 = r.stdout.strip().splitlines()
    assert out8.split(": ", 1)[1] == out16.split(": ", 1)[1]  # same prediction, same scores
