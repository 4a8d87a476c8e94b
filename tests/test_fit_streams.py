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


# -- iterables of batches -------------------------------------------------------------------------
def table(rng, n=100, features=5, classes=3):
    X = rng.standard_normal((n, features)).astype(np.float32)
    return X, rng.integers(0, classes, n)


def mlp(features=5, classes=3, seed=1):
    return vn.Sequential([L.Dense(features, 8), L.ReLU(), L.Dense(8, classes)], seed=seed)


def batches_of(X, y, size=32, epochs=1, *extra):
    """The batches ``fit(X, y, batch_size=size, shuffle=False)`` trains on, as a generator
    (float64 and lists, to be cast as they come)."""
    for _ in range(epochs):
        for s in range(0, len(X), size):
            yield (X[s : s + size].astype(np.float64), y[s : s + size].tolist(), *(e[s : s + size] for e in extra))


def test_a_generator_trains_what_the_arrays_train_in_order(rng):
    X, y = table(rng)
    val = (X[:20], y[:20])
    with one_blas_thread():
        a, b = mlp(), mlp()
        ha = a.fit(X, y, epochs=3, batch_size=32, shuffle=False, verbose=0, validation_data=val)
        hb = b.fit(batches_of(X, y, 32, 3), epochs=3, steps_per_epoch=4, verbose=0, validation_data=val)
    assert np.array_equal(a.flat_params, b.flat_params)
    assert ha.history == hb.history
    assert b.metadata["input_shape"] == [5]


def test_a_list_of_batches_is_one_pass_per_epoch(rng):
    X, y = table(rng)
    with one_blas_thread():
        a, b = mlp(), mlp()
        a.fit(X, y, epochs=2, batch_size=25, shuffle=False, verbose=0)
        hb = b.fit(list(batches_of(X, y, 25)), epochs=2, verbose=0)
    assert np.array_equal(a.flat_params, b.flat_params)
    assert len(hb.history["loss"]) == 2


def test_a_list_with_steps_per_epoch_continues_across_epochs(rng):
    X, y = table(rng)
    listed = list(batches_of(X, y, 25))  # 4 batches
    with one_blas_thread():
        a, b = mlp(), mlp()
        a.fit(listed, epochs=4, steps_per_epoch=3, verbose=0)  # 12 batches: 3 passes
        b.fit(iter(listed * 3), epochs=4, steps_per_epoch=3, verbose=0)
    assert np.array_equal(a.flat_params, b.flat_params)


def test_weights_as_a_third_element_equal_sample_weight(rng):
    X, y = table(rng)
    w = rng.uniform(0, 2, 100)
    with one_blas_thread():
        a, b = mlp(), mlp()
        ha = a.fit(X, y, epochs=2, batch_size=32, shuffle=False, verbose=0, sample_weight=w, class_weight={1: 3.0})
        hb = b.fit(batches_of(X, y, 32, 2, w), epochs=2, steps_per_epoch=4, verbose=0, class_weight={1: 3.0})
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)


def test_workers_split_streamed_batches(rng):
    X, y = table(rng, n=128)
    a, b = mlp(), mlp()
    a.fit(batches_of(X, y, 64, 2), epochs=2, steps_per_epoch=2, verbose=0, workers=1)
    b.fit(batches_of(X, y, 64, 2), epochs=2, steps_per_epoch=2, verbose=0, workers=2)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-5, atol=1e-5)


def test_a_generator_that_runs_out_stops_training_with_a_warning(rng):
    X, y = table(rng)
    model = mlp()
    gen = (b for k, b in enumerate(batches_of(X, y, 32, 2)) if k < 6)
    with pytest.warns(UserWarning, match=r"X ran out of batches after 6 of the 12 .*stopped after epoch 2"):
        hist = model.fit(gen, epochs=3, steps_per_epoch=4, verbose=0)
    assert len(hist.history["loss"]) == 2  # the second epoch ended with the 2 batches it had
    gen = batches_of(X, y, 32, 1)  # runs out exactly at an epoch's end
    with pytest.warns(UserWarning, match=r"after 4 of the 8 .*stopped after epoch 1"):
        hist = model.fit(gen, epochs=2, steps_per_epoch=4, verbose=0)
    assert len(hist.history["loss"]) == 1


def test_verbose_shows_one_line_per_epoch_for_a_stream(rng, capsys):
    X, y = table(rng)
    mlp().fit(batches_of(X, y, 32, 2), epochs=2, steps_per_epoch=4, verbose=1)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "loss=" in text


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            lambda X, y: (X[:10, :4], y[:10]),
            r"batch 3 of X: layer 0 Dense.*expected input of shape \(n, 5\), received \(n, 4\)",
        ),
        (lambda X, y: (X[:10], y[:9]), r"batch 3 of X: X_batch and y_batch must have the same number of samples"),
        (lambda X, y: (X[:10].astype(str), y[:10]), r"batch 3 of X: X_batch: expected a numeric array"),
        (lambda X, y: (np.full((10, 5), np.nan, np.float32), y[:10]), r"batch 3 of X: X_batch: contains 50 non-finite"),
        (lambda X, y: (X[:10], y[:10] + 7), r"batch 3 of X: y_batch: labels must lie in \[0, 3\)"),
        (lambda X, y: X[:10], r"batch 3 of X: expected a pair \(X_batch, y_batch\)"),
        (lambda X, y: (X[:10], y[:10], -np.ones(10)), r"batch 3 of X: sample_weight: weights must be >= 0"),
        (lambda X, y: (X[:10, 0], y[:10]), r"batch 3 of X: X_batch: expected an array of shape \(n_samples, ...\)"),
    ],
)
def test_a_bad_batch_is_refused_naming_it(rng, bad, match):
    X, y = table(rng)

    def gen():
        yield X[:10], y[:10]
        yield X[10:20], y[10:20]
        yield bad(X, y)

    with pytest.raises(ValueError, match=match):
        mlp().fit(gen(), epochs=1, steps_per_epoch=3, verbose=0)


def test_stream_refusals_name_the_argument(rng):
    X, y = table(rng)
    with pytest.raises(ValueError, match=r"steps_per_epoch"):
        mlp().fit(batches_of(X, y), verbose=0)
    with pytest.raises(ValueError, match=r"expected y=None"):
        mlp().fit(batches_of(X, y), y, steps_per_epoch=4, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split"):
        mlp().fit(batches_of(X, y), steps_per_epoch=4, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight: .*third element"):
        mlp().fit(batches_of(X, y), steps_per_epoch=4, sample_weight=np.ones(100), verbose=0)
    with pytest.raises(ValueError, match=r"class_weight='balanced' needs every label"):
        mlp().fit(batches_of(X, y), steps_per_epoch=4, class_weight="balanced", verbose=0)
    with pytest.raises(ValueError, match=r"expected steps_per_epoch to be a positive integer"):
        mlp().fit(batches_of(X, y), steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match=r"steps_per_epoch=4 applies to an X that yields batches"):
        mlp().fit(X, y, steps_per_epoch=4, verbose=0)
    with pytest.raises(ValueError, match=r"y is None"):
        mlp().fit(X, verbose=0)
    with pytest.raises(ValueError, match=r"yielded no batch"):
        mlp().fit([], verbose=0)


def test_a_batch_whose_samples_change_shape_is_refused(rng):
    X, y = table(rng)
    batches = [(X[:10], y[:10]), (X[10:20].reshape(10, 1, 5), y[10:20])]  # a Flatten first takes either
    model = vn.Sequential([L.Flatten(), L.Dense(5, 3)])
    with pytest.raises(
        ValueError,
        match=r"batch 2 of X: X_batch: expected samples of shape \(n, 5\) as in the batches before, "
        r"received \(10, 1, 5\)",
    ):
        model.fit(batches, verbose=0)


def test_batches_from_a_torch_dataloader(rng):
    torch = pytest.importorskip("torch")
    X, y = table(rng)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=32, shuffle=False
    )
    with one_blas_thread():
        a, b = mlp(), mlp()
        a.fit(X, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        b.fit(loader, epochs=2, verbose=0)  # re-iterable: one pass per epoch
    assert np.array_equal(a.flat_params, b.flat_params)
