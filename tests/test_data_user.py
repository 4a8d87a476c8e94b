"""vecnn.data.load_arrays (.npz, .npy pairs, CSV) and train_test_split."""

import numpy as np
import pytest

import vecnn as vn
from vecnn.data import load_arrays, train_test_split


@pytest.fixture
def Xy(rng):
    return rng.standard_normal((30, 4)), rng.integers(0, 3, 30)


# -- .npz / .npy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("xk, yk", [("x", "y"), ("X", "Y"), ("images", "labels"), ("features", "target")])
def test_npz_with_known_keys(tmp_path, Xy, xk, yk):
    X, y = Xy
    np.savez(tmp_path / "d.npz", **{xk: X, yk: y})
    X2, y2 = load_arrays(tmp_path / "d.npz")
    assert X2.dtype == np.float32 and y2.dtype == np.int64
    assert np.allclose(X2, X, atol=1e-6) and np.array_equal(y2, y)


def test_npz_with_two_unnamed_arrays_and_with_unknown_keys(tmp_path, Xy):
    X, y = Xy
    np.savez(tmp_path / "two.npz", X, y)  # arr_0, arr_1
    assert np.array_equal(load_arrays(tmp_path / "two.npz")[1], y)
    np.savez(tmp_path / "odd.npz", a=X, b=y, c=y)
    with pytest.raises(ValueError, match=r"holds \['a', 'b', 'c'\]"):
        load_arrays(tmp_path / "odd.npz")


def test_npy_pair_explicit_and_sibling(tmp_path, Xy):
    X, y = Xy
    for xname, yname in [
        ("X.npy", "y.npy"),
        ("X_train.npy", "y_train.npy"),
        ("digits_x.npy", "digits_y.npy"),
        ("feats.npy", "feats_y.npy"),
    ]:
        folder = tmp_path / xname.replace(".", "_")
        folder.mkdir()
        np.save(folder / xname, X)
        np.save(folder / yname, y)
        X2, y2 = load_arrays(folder / xname)
        assert np.array_equal(y2, y), xname
    np.save(tmp_path / "labels.npy", y)
    assert np.array_equal(load_arrays(tmp_path / "X_npy" / "X.npy", tmp_path / "labels.npy")[1], y)


def test_npy_without_labels_says_what_it_looked_for(tmp_path, Xy):
    np.save(tmp_path / "X.npy", Xy[0])
    with pytest.raises(ValueError, match=r"y\.npy.*--labels"):
        load_arrays(tmp_path / "X.npy")


def test_mismatched_lengths(tmp_path, Xy):
    X, y = Xy
    np.savez(tmp_path / "d.npz", x=X, y=y[:-1])
    with pytest.raises(ValueError, match="30 samples but y has 29"):
        load_arrays(tmp_path / "d.npz")


def test_images_keep_their_shape(tmp_path, rng):
    X = rng.integers(0, 256, (10, 1, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=X, y=np.arange(10) % 2)
    X2, _ = load_arrays(tmp_path / "img.npz")
    assert X2.shape == (10, 1, 6, 6) and X2.dtype == np.float32 and np.array_equal(X2, X)


def test_object_arrays_are_refused_not_unpickled(tmp_path, Xy):
    np.save(tmp_path / "X.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", Xy[1])
    with pytest.raises(ValueError, match="unpickling"):
        load_arrays(tmp_path / "X.npy")


@pytest.mark.parametrize(
    "y, message",
    [
        (np.array([0, 1, 2.5] * 10), "integer class indices"),
        (np.array([0, 1, np.nan] * 10), "missing label"),
        (np.array([0, -1, 2] * 10), ">= 0"),
        (np.array(["a", "b", "c"] * 10), r"holds <U1 values; vecnn reads numeric arrays only"),
        (np.zeros((30, 2)), r"shape \(n,\)"),
    ],
)
def test_bad_labels(tmp_path, Xy, y, message):
    np.savez(tmp_path / "d.npz", x=Xy[0], y=y)
    with pytest.raises(ValueError, match=message):
        load_arrays(tmp_path / "d.npz")


def test_non_finite_features_and_bad_files(tmp_path, Xy):
    X = Xy[0].copy()
    X[3, 2] = np.inf
    np.savez(tmp_path / "d.npz", x=X, y=Xy[1])
    with pytest.raises(ValueError, match=r"non-finite.*\(3, 2\)"):
        load_arrays(tmp_path / "d.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_arrays(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="no such file"):
        load_arrays(tmp_path / "absent.npz")
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown data format"):
        load_arrays(tmp_path / "d.parquet")


# -- CSV -------------------------------------------------------------------------------------
def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_with_header_and_named_label_column(tmp_path):
    p = write(tmp_path, "a,label,b\n1.5,0,2\n3,2,4\n-1,1,0.25\n")
    X, y = load_arrays(p)  # label_column="label" by default
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(X, np.array([[1.5, 2], [3, 4], [-1, 0.25]], np.float32))
    assert np.array_equal(y, [0, 2, 1])


def test_csv_without_header_by_index(tmp_path):
    p = write(tmp_path, "\n1,2,0\n3,4,1\n")
    for col in (2, -1, "2"):
        X, y = load_arrays(p, label_column=col)
        assert np.array_equal(y, [0, 1]) and np.array_equal(X, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="no header row"):
        load_arrays(p)  # "label" names nothing here
    with pytest.raises(ValueError, match="out of range"):
        load_arrays(p, label_column=5)


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    p = write(tmp_path, "a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(ValueError, match=r"non-numeric value 'oops' at line 3, column 'b'"):
        load_arrays(p)


def test_csv_missing_or_bad_label(tmp_path):
    with pytest.raises(ValueError, match=r"missing label at line 3, column 'label'"):
        load_arrays(write(tmp_path, "a,label\n1,0\n2,\n"))
    with pytest.raises(ValueError, match=r"non-numeric label 'cat' at line 2"):
        load_arrays(write(tmp_path, "a,label\n1,cat\n2,1\n"))
    with pytest.raises(ValueError, match="integer class indices"):
        load_arrays(write(tmp_path, "a,label\n1,0.5\n2,1\n"))
    with pytest.raises(ValueError, match="missing value at line 2, column 'a'"):
        load_arrays(write(tmp_path, "a,label\n,0\n2,1\n"))


def test_csv_ragged_rows_unknown_column_and_empty(tmp_path):
    with pytest.raises(ValueError, match="line 3 has 2 columns, expected 3"):
        load_arrays(write(tmp_path, "a,b,label\n1,2,0\n3,1\n"))
    with pytest.raises(ValueError, match=r"no label column 'y'; its columns are \['a', 'label'\]"):
        load_arrays(write(tmp_path, "a,label\n1,0\n"), label_column="y")
    with pytest.raises(ValueError, match="empty"):
        load_arrays(write(tmp_path, "\n\n"))
    with pytest.raises(ValueError, match="no data rows"):
        load_arrays(write(tmp_path, "a,label\n"))


def test_csv_refuses_a_separate_labels_file(tmp_path):
    with pytest.raises(ValueError, match="holds its own labels"):
        load_arrays(write(tmp_path, "a,label\n1,0\n"), tmp_path / "y.npy")


# -- splits ------------------------------------------------------------------------------------------
def test_split_sizes_disjoint_and_seeded():
    X = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100) % 4
    X_tr, y_tr, X_te, y_te = train_test_split(X, y, test_fraction=0.2, seed=3)
    assert len(X_te) == 20 and len(X_tr) == 80
    ids_tr, ids_te = X_tr[:, 0].astype(int), X_te[:, 0].astype(int)
    assert sorted(np.concatenate([ids_tr, ids_te])) == list(range(100))
    assert np.array_equal(y_tr, ids_tr % 4) and np.array_equal(y_te, ids_te % 4)  # rows stay paired
    again = train_test_split(X, y, test_fraction=0.2, seed=3)
    assert np.array_equal(again[2], X_te)
    other = train_test_split(X, y, test_fraction=0.2, seed=4)
    assert not np.array_equal(other[2], X_te)
    gen = train_test_split(X, y, 0.2, seed=np.random.default_rng(3))
    assert np.array_equal(gen[2], X_te)


def test_stratified_split_keeps_class_shares():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    X = np.arange(100, dtype=np.float32)[:, None]
    _, y_tr, _, y_te = train_test_split(X, y, 0.1, seed=0, stratify=True)
    assert np.array_equal(np.bincount(y_te), [5, 3, 2])
    assert np.array_equal(np.bincount(y_tr), [45, 27, 18])


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.2"])
def test_split_refuses_bad_fractions(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(np.zeros((10, 2)), np.zeros(10), test_fraction=fraction)


def test_split_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="10 samples but y has 9"):
        train_test_split(np.zeros((10, 2)), np.zeros(9))


def test_public_names():
    for name in (
        "load",
        "load_arrays",
        "train_test_split",
        "read_idx",
        "class_names",
        "describe",
        "Augment",
        "download",
        "DatasetNotFoundError",
        "DownloadError",
    ):
        assert hasattr(vn.data, name)
