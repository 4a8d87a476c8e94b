"""fit(workers=...): each batch split across threads, gradients averaged by share."""

import copy
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import vecnn as vn
from vecnn import layers as L
from vecnn import parallel


def small_cnn(seed=0, extra=()):
    return vn.Sequential(
        [L.Conv2D(1, 4, 3), L.ReLU(), L.MaxPool2D(2), *extra, L.Flatten(), L.Dense(36, 8), L.ReLU(), L.Dense(8, 3)],
        seed=seed,
    )


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("workers, batch_size", [(2, 24), (2, 5), (3, 7), (4, 2)])
def test_split_batches_give_the_whole_batch_gradient(workers, batch_size):
    """Shares of unequal size (5 = 2 + 3, 7 = 2 + 2 + 3, 2 rows for 4 workers) are weighted by
    their row counts: the update equals the unsplit one."""
    X, y = data()
    models = [small_cnn(), small_cnn()]
    hist = [
        m.fit(
            X,
            y,
            optimizer=vn.optim.SGD(lr=0.1, momentum=0.9),
            epochs=2,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
            workers=w,
        )
        for m, w in zip(models, (1, workers))
    ]
    np.testing.assert_allclose(models[1].flat_params, models[0].flat_params, rtol=1e-4, atol=1e-6)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(hist[1].history[key], hist[0].history[key], rtol=1e-5)
    assert not np.array_equal(models[1].flat_params, small_cnn().flat_params)  # it trained


def test_auto_splits_convolutional_models_only(monkeypatch):
    monkeypatch.setattr(parallel, "blas_threads", lambda: 2)
    mlp = vn.Sequential([L.Dense(4, 8), L.ReLU(), L.Dense(8, 2)])
    assert parallel.auto_workers(mlp, 128) == 1
    assert parallel.auto_workers(small_cnn(), 128) == 2
    assert parallel.auto_workers(small_cnn(), 32) == 1  # too few rows to share
    assert parallel.auto_workers(small_cnn(extra=[L.Dropout(0.5)]), 128) == 2
    assert parallel.auto_workers(small_cnn(extra=[L.BatchNorm2D(4)]), 128) == 1
    monkeypatch.setattr(parallel, "blas_threads", lambda: 1)
    assert parallel.auto_workers(small_cnn(), 128) == 1


@pytest.mark.parametrize("workers", [0, -1, True, 1.5, "two"])
def test_bad_workers_value(workers):
    X, y = data()
    with pytest.raises(ValueError, match="workers"):
        small_cnn().fit(X, y, verbose=0, workers=workers)


def test_workers_refused_where_the_split_changes_the_result():
    X, y = data()
    with pytest.raises(ValueError, match="BatchNorm2D"):
        small_cnn(extra=[L.BatchNorm2D(4)]).fit(X, y, verbose=0, workers=2)


def test_worker_error_reaches_the_caller_and_threads_stop(monkeypatch):
    X, y = data()
    model = small_cnn()
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    threads_before = threading.active_count()
    real = parallel._forward_backward

    def failing(m, x, t):
        if m is not model:
            raise RuntimeError("boom in a worker")
        return real(m, x, t)

    monkeypatch.setattr(parallel, "_forward_backward", failing)
    with pytest.raises(RuntimeError, match="boom in a worker"):
        model.fit(X, y, batch_size=8, verbose=0, workers=2)
    assert threading.active_count() == threads_before
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas_before


def test_replicas_share_parameters_and_keep_their_own_gradients():
    model = small_cnn()
    rep = parallel._replica(model)
    for mine, theirs in zip(rep.layers, model.layers):
        for k in theirs.params:
            assert np.shares_memory(mine.params[k], model.flat_params)
            assert not np.shares_memory(mine.grads[k], model.flat_grads)
    assert rep.layers[0].input_grad is False


def test_replicas_are_kept_across_fit_calls_while_the_layers_stay():
    X, y = data()
    model = small_cnn()
    model.fit(X, y, batch_size=8, verbose=0, workers=2)
    first = model._data_parallel
    model.fit(X, y, batch_size=8, verbose=0, workers=2, loss="cross_entropy")
    assert model._data_parallel is first
    copy.deepcopy(model)  # no locks left behind
    model.layers[-1].params["b"] = model.layers[-1].params["b"].copy()  # parameters rebound
    model.fit(X, y, batch_size=8, verbose=0, workers=2)
    assert model._data_parallel is not first


def test_dropout_masks_per_worker_are_reproducible_and_differ_between_workers():
    X, y = data(n=32)
    runs = []
    for _ in range(2):
        model = small_cnn(seed=3, extra=[L.Dropout(0.5)])
        model.fit(X, y, batch_size=16, epochs=2, verbose=0, workers=2)
        runs.append(model.flat_params.copy())
        rep = model._data_parallel.replicas[1]
        drop_main, drop_rep = model.layers[3], rep.layers[3]
        assert drop_rep.rng is not drop_main.rng
        assert drop_rep.rng.bit_generator.state != drop_main.rng.bit_generator.state
    np.testing.assert_array_equal(runs[0], runs[1])  # same seed, same result
    one = small_cnn(seed=3, extra=[L.Dropout(0.5)])
    one.fit(X, y, batch_size=16, epochs=2, verbose=0, workers=1)
    assert np.isfinite(one.flat_params).all() and not np.array_equal(one.flat_params, runs[0])


def test_float64_models_split_exactly_in_float64():
    X, y = data()
    models = [small_cnn(), small_cnn()]
    for m in models:
        for layer in m.layers:
            layer.astype(np.float64)
        m._build_flat()
    hist = [
        m.fit(
            X.astype(np.float64),
            y,
            optimizer=vn.optim.SGD(lr=0.1),
            epochs=2,
            batch_size=6,
            shuffle=False,
            verbose=0,
            workers=w,
        )
        for m, w in zip(models, (1, 2))
    ]
    assert models[1]._data_parallel.replicas[1].flat_grads.dtype == np.float64
    np.testing.assert_allclose(models[1].flat_params, models[0].flat_params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hist[1].history["loss"], hist[0].history["loss"], rtol=1e-12)


def test_replicas_follow_a_layer_changed_in_place():
    X, y = data()
    model = small_cnn(extra=[L.Dropout(0.5)])
    model.fit(X, y, batch_size=8, verbose=0, workers=2)
    model.layers[3].rate = 0.0
    model.fit(X, y, batch_size=8, verbose=0, workers=2)
    assert model._data_parallel.replicas[1].layers[3].rate == 0.0
