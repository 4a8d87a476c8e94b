"""fit on data that is not one in-memory float32 array: memory-mapped files (read batch by
batch, never cast whole) and iterables of ``(X_batch, y_batch)`` batches (Keras-style)."""

import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import vecnn as vn
from vecnn import layers as L


def images(rng, path, n=4096, side=32, classes=4):
    """A uint8 image file of ``n`` (1, side, side) images (4 MiB at the defaults), memory-mapped
    read-only, its labels, and the same images in memory."""
    pixels = rng.integers(0, 256, (n, 1, side, side), dtype=np.uint8)
    mm = np.memmap(path, np.uint8, "w+", shape=pixels.shape)
    mm[...] = pixels
    mm.flush()
    del mm
    return np.memmap(path, np.uint8, "r", shape=pixels.shape), rng.integers(0, classes, n), pixels


def one_blas_thread():
    """Bit-for-bit comparisons of two fits: the thread governor may give BLAS another thread
    count in one of them (timing decides), and a product's rounding depends on it."""
    return threadpool_limits(1, user_api="blas")


def flat_net(side=32, classes=4, seed=0):
    return vn.Sequential([L.Flatten(), L.Dense(side * side, 8), L.ReLU(), L.Dense(8, classes)], seed=seed)


# -- memory-mapped arrays -------------------------------------------------------------------------
def test_fit_on_a_uint8_memmap_never_casts_it_whole(rng, tmp_path):
    X, y, pixels = images(rng, tmp_path / "images.u8")
    size = X.nbytes
    model = flat_net()
    opt = vn.optim.SGD(lr=1e-4)
    tracemalloc.start()
    try:
        with one_blas_thread():
            hist = model.fit(X, y, optimizer=opt, epochs=1, batch_size=64, verbose=0, validation_split=0.1, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the float32 copy alone would be 4x the file; a batch is 256 KiB
    assert peak < size, f"fit allocated {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB uint8 file"
    # and it trains what the same images in memory (cast up front) train
    twin = flat_net()
    with one_blas_thread():
        twin_hist = twin.fit(
            pixels.astype(np.float32), y, optimizer=vn.optim.SGD(lr=1e-4), epochs=1, batch_size=64, verbose=0,
            validation_split=0.1, seed=1,
        )  # fmt: skip
    assert np.array_equal(model.flat_params, twin.flat_params)
    assert hist.history == twin_hist.history


def test_predict_and_evaluate_on_a_memmap(rng, tmp_path):
    X, y, pixels = images(rng, tmp_path / "images.u8")
    model = flat_net()
    model.fit(X[:256], y[:256], epochs=1, verbose=0)
    tracemalloc.start()
    try:
        out = model.predict(X, batch_size=256)
        scores = model.evaluate(X, y, batch_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes
    np.testing.assert_array_equal(out, model.predict(pixels.astype(np.float32), batch_size=256))
    assert scores == model.evaluate(pixels.astype(np.float32), y, batch_size=256)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_a_float_memmap_is_checked_for_nan_chunk_by_chunk(rng, tmp_path):
    n, d = 3000, 700  # several chunks of rows
    mm = np.memmap(tmp_path / "x.f64", np.float64, "w+", shape=(n, d))
    mm[...] = rng.standard_normal((n, d))
    mm[2500, 3] = np.nan
    mm[2900, 0] = 1e300  # beyond float32: Inf once cast, as for an in-memory array
    mm.flush()
    X = np.memmap(tmp_path / "x.f64", np.float64, "r", shape=(n, d))
    model = vn.Sequential([L.Dense(d, 2)])
    with pytest.raises(
        ValueError, match=r"X: contains 2 non-finite value\(s\) \(NaN or Inf\), the first at index \(2500, 3\)"
    ):
        model.fit(X, np.zeros(n, np.int64), verbose=0)
    with pytest.raises(ValueError, match=r"X: contains 2 non-finite value\(s\).*\(2500, 3\)"):
        model.fit(np.asarray(X), np.zeros(n, np.int64), verbose=0)  # the in-memory check says the same
