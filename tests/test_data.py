"""vecnn.data: the built-in digits, the IDX reader, named datasets and where they are found."""

import gzip
import importlib.util
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import vecnn as vn
from vecnn.data import named
from vecnn.data.idx import read_idx, write_idx

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


# -- digits ---------------------------------------------------------------------------------------
def test_digits_shapes_dtypes_and_range():
    X_train, y_train, X_test, y_test = vn.data.load("digits")
    assert X_train.shape == (1442, 1, 8, 8) and X_test.shape == (355, 1, 8, 8)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    for X in (X_train, X_test):
        assert X.min() == 0.0 and X.max() == 1.0
        assert np.array_equal(X * 16, np.round(X * 16))  # pixel counts / 16
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))


def test_digits_split_is_fixed_and_stratified():
    _, y_train, _, y_test = vn.data.load("digits")
    counts = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    assert counts.sum() == 1797
    # every fifth image of each digit is a test image
    assert np.array_equal(np.bincount(y_test, minlength=10), counts // 5)
    again = vn.data.load("digits")
    assert np.array_equal(again[3], y_test)


def test_digits_equal_scikit_learns_copy():
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()
    with np.load(ROOT / "vecnn" / "data" / "digits.npz", allow_pickle=False) as f:
        images, labels, test = f["images"], f["labels"], f["test"]
    assert np.array_equal(images.reshape(1797, 64), ref.data.astype(np.uint8))
    assert np.array_equal(labels, ref.target)
    X_train, y_train, X_test, y_test = vn.data.load("digits")
    assert np.array_equal(X_test[:, 0] * 16, ref.images[test])
    assert np.array_equal(y_train, ref.target[~test])


def test_make_digits_tool_reproduces_the_shipped_file(tmp_path):
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("make_digits", ROOT / "tools" / "make_digits.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "digits.npz"
    tool.main(["--out", str(out)])
    assert out.read_bytes() == (ROOT / "vecnn" / "data" / "digits.npz").read_bytes()


def test_digits_load_offline_without_scikit_learn():
    code = (
        "import sys; sys.modules['sklearn'] = None; import vecnn as vn; "
        "X, y, Xt, yt = vn.data.load('digits'); "
        "assert 'sklearn' not in sys.modules or sys.modules['sklearn'] is None; "
        "print(X.shape, Xt.shape)"
    )
    env = {**os.environ, "VECNN_DATA": "/nonexistent"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1442, 1, 8, 8) (355, 1, 8, 8)"


def test_digits_license_and_citation_ship_with_the_data():
    text = (ROOT / "vecnn" / "data" / "DIGITS_LICENSE.txt").read_text()
    for needle in ("CC BY 4.0", "10.24432/C50P49", "Alpaydin", "Kaynak", "1998"):
        assert needle in text
    assert "CC BY 4.0" in vn.data.info("digits").license


def test_damaged_digits_file_is_a_clear_error(tmp_path):
    from vecnn.data.digits import load_digits

    bad = tmp_path / "digits.npz"
    np.savez(bad, images=np.zeros((3, 8, 8), np.uint8), labels=np.zeros(3, np.uint8), test=np.zeros(3, bool))
    with pytest.raises(ValueError, match="damaged"):
        load_digits(bad)


# -- IDX reader --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz, rng):
    a = (rng.standard_normal((5, 3, 4)) * 100).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert np.array_equal(a, b)


def _mnist_bytes(images: np.ndarray) -> bytes:
    """An idx3-ubyte file assembled by hand, as the MNIST page documents it."""
    n, h, w = images.shape
    return struct.pack(">IIII", 0x00000803, n, h, w) + images.tobytes()


def test_idx_reads_a_hand_built_mnist_file(tmp_path, rng):
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    (tmp_path / "img").write_bytes(_mnist_bytes(images))
    (tmp_path / "img.gz").write_bytes(gzip.compress(_mnist_bytes(images)))
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    (tmp_path / "lab").write_bytes(struct.pack(">II", 0x00000801, 7) + labels.tobytes())
    assert np.array_equal(read_idx(tmp_path / "img"), images)
    assert np.array_equal(read_idx(tmp_path / "img.gz"), images)  # gzip is detected by content
    assert np.array_equal(read_idx(tmp_path / "lab"), labels)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code 0x07"),
        (lambda b: b[:3] + b"\x00", "0 dimensions"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing"),
        (lambda b: b[:9], "truncated"),
        (lambda b: b[:2], "too short"),
    ],
)
def test_idx_refuses_bad_files(tmp_path, gz, mutate, message):
    good = _mnist_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    data = mutate(good)
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_idx_refuses_a_corrupt_or_cut_gzip_stream(tmp_path):
    blob = gzip.compress(_mnist_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(cut)
    flipped = bytearray(blob)
    flipped[-6] ^= 0xFF  # inside the CRC / size trailer
    bad = tmp_path / "crc.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="crc.gz"):
        read_idx(bad)


def test_idx_forged_header_is_refused_before_any_allocation(tmp_path):
    forged = tmp_path / "forged"
    forged.write_bytes(struct.pack(">IIII", 0x0803, 2**31, 2**31, 2**31))
    with pytest.raises(ValueError, match="more than vecnn allows"):  # vecnn.limits.MAX_ELEMENTS
        read_idx(forged)
    write_idx(tmp_path / "small", np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match="more than the limit"):
        read_idx(tmp_path / "small", max_bytes=10)


def test_idx_gzip_promising_much_holding_little_allocates_little(tmp_path):
    # the header promises 1 GB (within vecnn.limits); the file holds 1 KB: memory follows the
    # data, not the promise
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x0803, 1_000_000, 1000, 1) + bytes(1000)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="truncated"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak allocation {peak:,} bytes"


def test_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    # 10 promised bytes followed by 64 MiB of zeros, which compress to ~64 KB
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 0x0801, 10) + bytes(10 + 64 * 2**20), compresslevel=1))
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak allocation {peak:,} bytes"


def test_idx_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such IDX file"):
        read_idx(tmp_path / "nope")


# -- named datasets: where they are found -------------------------------------------------------------
def make_dataset(folder: Path, n_train=12, n_test=6, seed=0, gz=True, label_offset=0):
    """Four small MNIST-style IDX files; returns the uint8 arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": ((np.arange(n_train) + label_offset) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) + label_offset) % 10).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Point every search place into tmp_path (nothing from the real machine leaks in)."""
    env, cache, system = tmp_path / "env", tmp_path / "xdg", tmp_path / "system"
    monkeypatch.setenv("VECNN_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(named, "SYSTEM_DIR", system)
    return {"env": env, "cache": cache / "vecnn", "system": system, "tmp": tmp_path}


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_root_folder(places, gz):
    folder = places["tmp"] / "mine"
    arrays = make_dataset(folder, gz=gz)
    X_train, y_train, X_test, y_test = vn.data.load("fashion-mnist", root=folder)
    assert X_train.shape == (12, 1, 28, 28) and X_train.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.shape == (6,)
    assert np.array_equal(X_train[:, 0], (arrays["train-images-idx3-ubyte"] / 255.0).astype(np.float32))
    assert np.array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert 0 <= X_test.min() and X_test.max() <= 1


def test_root_may_be_the_parent_or_a_torchvision_tree(places):
    make_dataset(places["tmp"] / "parent" / "kmnist", label_offset=3)
    assert vn.data.load("kmnist", root=places["tmp"] / "parent")[1][0] == 3
    make_dataset(places["tmp"] / "tv" / "MNIST" / "raw", label_offset=4)
    assert vn.data.load("mnist", root=places["tmp"] / "tv")[1][0] == 4


def test_explicit_root_is_the_only_place_looked(places):
    make_dataset(places["env"] / "mnist")  # present in $VECNN_DATA ...
    empty = places["tmp"] / "empty"
    empty.mkdir()
    with pytest.raises(vn.data.DatasetNotFoundError) as e:  # ... but root= says look only here
        vn.data.load("mnist", root=empty)
    assert str(empty) in str(e.value) and str(places["env"]) not in str(e.value)


def test_search_order_env_then_cache_then_system(places):
    make_dataset(places["system"] / "mnist", label_offset=3)
    assert vn.data.load("mnist")[1][0] == 3
    make_dataset(places["cache"] / "mnist", label_offset=2)
    assert vn.data.load("mnist")[1][0] == 2
    make_dataset(places["env"] / "mnist", label_offset=1)
    assert vn.data.load("mnist")[1][0] == 1
    assert vn.data.locate("mnist") == places["env"] / "mnist"


def test_cache_honours_xdg_and_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert vn.data.cache_dir() == tmp_path / "vecnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert vn.data.cache_dir() == tmp_path / "home" / ".cache" / "vecnn"


def test_not_found_lists_every_place_and_how_to_get_it(places):
    with pytest.raises(vn.data.DatasetNotFoundError) as e:
        vn.data.load("fashion-mnist")
    msg = str(e.value)
    for place in (
        places["env"] / "fashion-mnist",
        places["cache"] / "fashion-mnist",
        places["system"] / "fashion-mnist",
    ):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, FileNotFoundError)


def test_a_broken_file_is_an_error_not_skipped(places):
    make_dataset(places["cache"] / "mnist")  # a good copy further down
    arrays = make_dataset(places["env"] / "mnist")
    bad = places["env"] / "mnist" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(_mnist_bytes(arrays["t10k-images-idx3-ubyte"])[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        vn.data.load("mnist")


def test_an_incomplete_folder_is_an_error(places):
    make_dataset(places["env"] / "mnist")
    (places["env"] / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        vn.data.load("mnist")


def test_images_and_labels_must_agree(places):
    folder = places["env"] / "mnist"
    make_dataset(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="12 images but .* 5 labels"):
        vn.data.load("mnist")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with pytest.raises(ValueError, match="label 10 out of range"):
        vn.data.load("mnist")
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((12, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        vn.data.load("mnist")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        vn.data.load("fashion-mnsit")
    msg = str(e.value)
    assert "Did you mean 'fashion-mnist'" in msg
    for name in ("digits", "fashion-mnist", "mnist", "kmnist"):
        assert name in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_class_names_and_aliases():
    assert vn.data.class_names("fashion-mnist")[0] == "T-shirt/top"
    assert vn.data.class_names("Fashion_MNIST")[-1] == "Ankle boot"
    assert vn.data.class_names("digits") == tuple("0123456789") == vn.data.class_names("mnist")
    assert vn.data.class_names("kmnist") == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    for name in vn.data.DATASETS:
        assert len(vn.data.class_names(name)) == 10


def test_describe_says_where_each_dataset_is(places):
    make_dataset(places["cache"] / "kmnist")
    lines = vn.data.describe()
    assert len(lines) == len(vn.data.DATASETS)
    by_name = {line.split()[0]: line for line in lines}
    assert "built in" in by_name["digits"]
    assert str(places["cache"] / "kmnist") in by_name["kmnist"]
    assert "not found" in by_name["mnist"] and "--download" in by_name["mnist"]
    assert "apt-get install dataset-fashion-mnist" in by_name["fashion-mnist"]
    found = {e["name"]: e["path"] for e in vn.data.available()}
    assert found["kmnist"] == str(places["cache"] / "kmnist") and found["mnist"] is None


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.delenv("VECNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache: found in the system folder
    assert vn.data.locate("fashion-mnist") == SYSTEM_FASHION
    X_train, y_train, X_test, y_test = vn.data.load("fashion-mnist")
    assert X_train.shape == (60000, 1, 28, 28) and X_test.shape == (10000, 1, 28, 28)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert np.array_equal(np.bincount(y_train), np.full(10, 6000))
    assert np.array_equal(np.bincount(y_test), np.full(10, 1000))
    assert X_train.min() == 0.0 and X_train.max() == 1.0
