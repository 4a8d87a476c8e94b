"""BatchNorm1D / BatchNorm2D options as PyTorch has them: ``affine=False`` (no scale and shift),
``track_running_stats=False`` (batch statistics in eval mode too, no running statistics) and
``momentum=None`` (the running statistics are the cumulative average of every batch's).

Each option through the shared harness (loop twin, vectorized layer, finite differences and
``F.batch_norm``), the running statistics against ``torch.nn.BatchNorm*`` step by step, and the
configuration and model files, old and new."""

import itertools

import numpy as np
import pytest
from harness import check_layer

import vecnn as vn
from vecnn import io, kernels, reference
from vecnn import layers as L

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(params=["fused", "numpy"], autouse=True)
def kernel_path(request, monkeypatch):
    """Every test here runs with the compiled kernels (when numba is present) and without."""
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "enabled", False)
    return request.param


def with_running_stats(layer, seed=1):
    """The layer with running statistics that are not the trivial 0 / 1 (when it keeps them)."""
    if layer.track_running_stats:
        rng = np.random.default_rng(seed)
        C = layer.num_features
        layer.state["running_mean"][...] = rng.standard_normal(C, dtype=np.float32)
        layer.state["running_var"][...] = rng.uniform(0.5, 2.0, C).astype(np.float32)
    return layer


def torch_batchnorm(layer, x, p, training):
    """``F.batch_norm`` as ``torch.nn.BatchNorm*`` calls it for the layer's options."""
    track = layer.track_running_stats
    rm = torch.from_numpy(layer.state["running_mean"].copy()) if track else None
    rv = torch.from_numpy(layer.state["running_var"].copy()) if track else None
    momentum = 0.1 if layer.momentum is None else layer.momentum  # (the output does not depend on it)
    return F.batch_norm(
        x, rm, rv, p.get("gamma"), p.get("beta"), training=training or not track, momentum=momentum, eps=layer.eps
    )


OPTIONS = [
    dict(affine=False),
    dict(track_running_stats=False),
    dict(affine=False, track_running_stats=False),
    dict(momentum=None),
    dict(affine=False, momentum=None, eps=1e-3),
]


def _id(options):
    return ",".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("options", OPTIONS, ids=_id)
@pytest.mark.parametrize("cls, shape", [(L.BatchNorm1D, (6, 4)), (L.BatchNorm2D, (2, 4, 3, 3))], ids=["1D", "2D"])
def test_harness(cls, shape, options, training):
    check_layer(
        lambda: with_running_stats(cls(4, **options)),
        shape,
        torch_fn=lambda l, x, p: torch_batchnorm(l, x, p, training),
        training=training,
    )


def channels_last(x):
    """``x`` (N, C, H, W) laid out channels-last in memory: the layer's (M, C) fast path."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("options", OPTIONS, ids=_id)
def test_channels_last_input_computes_the_same(options, training):
    """An NCHW batch laid out channels-last (a Conv2D's output) takes the (M, C) path; a C-order
    copy of it the other one: both give what torch gives."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 2), dtype=np.float32) * 2 + 1
    g = rng.standard_normal(x.shape, dtype=np.float32)
    noise = rng.standard_normal(4, dtype=np.float32)
    results = []
    for data in (channels_last(x), x.copy()):
        layer = with_running_stats(L.BatchNorm2D(4, **options))
        for p in layer.params.values():
            p[...] += np.float32(0.1) * noise
        results.append((layer.forward(data, training), layer.backward(g.copy()), layer))
    (y1, gx1, l1), (y2, gx2, l2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx1, gx2, rtol=1e-4, atol=1e-5)
    for k in l1.params:
        np.testing.assert_allclose(l1.grads[k], l2.grads[k], rtol=1e-4, atol=1e-4)
    for k in l1.state:
        np.testing.assert_allclose(l1.state[k], l2.state[k], rtol=1e-6, atol=1e-6)


# -- running statistics against torch.nn.BatchNorm*, step by step ----------------------------------
@pytest.mark.parametrize("options", OPTIONS, ids=_id)
@pytest.mark.parametrize(
    "cls, tcls, shape",
    [(L.BatchNorm1D, "BatchNorm1d", (8, 4)), (L.BatchNorm2D, "BatchNorm2d", (2, 4, 3, 5))],
    ids=["1D", "2D"],
)
def test_steps_match_torch(cls, tcls, shape, options):
    """Three training steps, then eval mode: outputs, input gradients and the running statistics
    (and the count of batches with ``momentum=None``) equal torch's after every step."""
    rng = np.random.default_rng(0)
    layer = cls(4, **options)
    ref = getattr(torch.nn, tcls)(4, **options).double()
    for step in range(3):
        x = rng.standard_normal(shape, dtype=np.float32) * (step + 1) + step
        if len(shape) == 4 and step == 1:
            x = channels_last(x)
        g = rng.standard_normal(shape, dtype=np.float32)
        x_t = torch.tensor(x.astype(np.float64), requires_grad=True)
        y_t = ref(x_t)
        y_t.backward(torch.from_numpy(g.astype(np.float64)))
        np.testing.assert_allclose(layer.forward(x, training=True), y_t.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.backward(g), x_t.grad.numpy(), rtol=1e-4, atol=1e-4)
        if layer.track_running_stats:
            for k in ("running_mean", "running_var"):
                np.testing.assert_allclose(layer.state[k], getattr(ref, k).numpy(), rtol=1e-5, atol=1e-6)
        else:
            assert layer.state == {} and ref.running_mean is None
        if layer.momentum is None and layer.track_running_stats:
            assert layer.state["num_batches_tracked"].tolist() == [ref.num_batches_tracked.item()] == [step + 1]
    ref.eval()
    x = rng.standard_normal(shape, dtype=np.float32)
    np.testing.assert_allclose(
        layer.forward(x), ref(torch.from_numpy(x.astype(np.float64))).detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_cumulative_average_is_the_mean_of_the_batch_statistics():
    """momentum=None: after k batches the running mean is the plain mean of the k batch means,
    and the running variance that of the k unbiased batch variances (independent of torch)."""
    rng = np.random.default_rng(5)
    layer = L.BatchNorm1D(3, momentum=None)
    batches = [rng.standard_normal((6, 3)).astype(np.float32) * (i + 1) + i for i in range(4)]
    for x in batches:
        layer.forward(x, training=True)
    means = np.stack([x.astype(np.float64).mean(axis=0) for x in batches])
    variances = np.stack([x.astype(np.float64).var(axis=0, ddof=1) for x in batches])
    np.testing.assert_allclose(layer.state["running_mean"], means.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.state["running_var"], variances.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert layer.state["num_batches_tracked"].dtype == np.float32
    layer.init_params(None)
    assert layer.state["num_batches_tracked"].tolist() == [0.0]


def test_without_running_statistics_eval_uses_the_batch():
    """track_running_stats=False: eval mode normalizes each batch with its own statistics, so
    every feature of the output has mean 0 and (biased) variance 1 up to eps."""
    rng = np.random.default_rng(2)
    layer = L.BatchNorm2D(3, track_running_stats=False, affine=False, eps=1e-8)
    x = rng.standard_normal((4, 3, 5, 5), dtype=np.float32) * 3 + 2
    y = layer.forward(x).astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    with pytest.raises(ValueError, match="track_running_stats=False.*more than one value per feature"):
        L.BatchNorm1D(3, track_running_stats=False).forward(np.ones((1, 3), np.float32))


# -- configuration ---------------------------------------------------------------------------------
def test_defaults_are_unchanged_and_configs_name_only_what_differs():
    for cls in (L.BatchNorm1D, L.BatchNorm2D):
        layer = cls(4)
        assert layer.config() == {"num_features": 4, "eps": 1e-5, "momentum": 0.1}  # as before the options
        assert (layer.affine, layer.track_running_stats) == (True, True)
        assert sorted(layer.params) == ["beta", "gamma"] and sorted(layer.state) == ["running_mean", "running_var"]
        assert cls.from_config({"num_features": 4}).config() == layer.config()
        layer = cls(4, momentum=None, affine=False, track_running_stats=False)
        assert layer.config() == {
            "num_features": 4,
            "eps": 1e-5,
            "momentum": None,
            "affine": False,
            "track_running_stats": False,
        }


@pytest.mark.parametrize(
    "options",
    [{}, *OPTIONS, dict(momentum=None, track_running_stats=False, affine=False)],
    ids=lambda o: _id(o) or "defaults",
)
def test_param_shapes_match_the_built_layer(options):
    for cls in (L.BatchNorm1D, L.BatchNorm2D):
        layer = cls(5, **options)
        params, state = cls.param_shapes(layer.config())
        assert params == {k: v.shape for k, v in layer.params.items()}
        assert state == {k: v.shape for k, v in layer.state.items()}
        rebuilt = cls.from_config(layer.config())
        assert rebuilt.config() == layer.config()
        assert all(v.dtype == np.float32 for v in [*layer.params.values(), *layer.state.values()])


@pytest.mark.parametrize(
    "options, argument",
    [
        (dict(affine="no"), "affine"),
        (dict(track_running_stats=2), "track_running_stats"),
        (dict(momentum=1.5), "momentum"),
        (dict(momentum="None"), "momentum"),
    ],
)
def test_bad_options_are_named(options, argument):
    with pytest.raises(ValueError, match=f"BatchNorm2D\\(3\\).*{argument}"):
        L.BatchNorm2D(3, **options)


def test_twins_keep_their_rules():
    """The loop twins of the options do no array arithmetic (tests/test_reference.py's fences)."""
    from test_reference import fenced, forbidden, no_numpy_math, untouchable

    rng = np.random.default_rng(0)
    for options, training in itertools.product(OPTIONS, (True, False)):
        for layer, shape in ((L.BatchNorm1D(4, **options), (5, 4)), (L.BatchNorm2D(4, **options), (2, 4, 3, 3))):
            x = rng.standard_normal(shape, dtype=np.float32)
            g = rng.standard_normal(shape, dtype=np.float32)
            y_plain = reference.forward(layer, x, training)
            gx_plain, grads_plain = reference.backward(layer, x, g, training)
            assert sorted(grads_plain) == sorted(layer.params)
            guarded = fenced(layer)
            with no_numpy_math(), forbidden(guarded):
                y = reference.forward(guarded, untouchable(x), training)
                gx, grads = reference.backward(guarded, untouchable(x), untouchable(g), training)
            np.testing.assert_array_equal(np.asarray(y), y_plain)
            np.testing.assert_array_equal(np.asarray(gx), gx_plain)


# -- model files -------------------------------------------------------------------------------------
def _data(rng, n=24):
    X = rng.standard_normal((n, 2, 4, 4)).astype(np.float32)
    return X, rng.integers(0, 3, n)


def _net(**options):
    return [
        L.Conv2D(2, 3, 3, padding=1, bias=False),
        L.BatchNorm2D(3, **options),
        L.ReLU(),
        L.Flatten(),
        L.Dense(48, 6),
        L.BatchNorm1D(6, **options),
        L.Dense(6, 3),
    ]


@pytest.mark.parametrize("options", OPTIONS, ids=_id)
def test_model_with_options_trains_saves_and_loads(tmp_path, options):
    rng = np.random.default_rng(1)
    X, y = _data(rng)
    model = vn.Sequential(_net(**options), seed=0)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "m.vecnn"
    model.save(path)
    loaded = vn.load(path)
    assert [l.config() for l in loaded.layers] == [l.config() for l in model.layers]
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    for a, b in zip(loaded.layers, model.layers):
        assert sorted(a.state) == sorted(b.state)
        for k in b.state:
            np.testing.assert_array_equal(a.state[k], b.state[k])
    if options.get("momentum", 0.1) is None and options.get("track_running_stats", True):
        assert model.layers[1].state["num_batches_tracked"].tolist() == [6.0]  # 2 epochs of 3 batches
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_model_file_written_with_the_defaults_loads_as_before(tmp_path):
    """A model file as vecnn wrote it before the options existed: BatchNorm configs with
    num_features, eps and momentum only, gamma/beta and running_mean/running_var tensors."""
    rng = np.random.default_rng(1)
    X, y = _data(rng)
    model = vn.Sequential(_net(), seed=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    tensors, meta = io.model_tensors(model), io.model_meta(model)
    for spec in meta["architecture"]:
        if spec["name"].startswith("BatchNorm"):
            assert sorted(spec["config"]) == ["eps", "momentum", "num_features"]
    assert sorted(k for k in tensors if k.startswith("layers.1.")) == [
        "layers.1.beta",
        "layers.1.gamma",
        "layers.1.state.running_mean",
        "layers.1.state.running_var",
    ]
    path = tmp_path / "old.vecnn"
    path.write_bytes(io.dumps(tensors, meta))
    loaded = vn.load(path)
    assert (loaded.layers[1].affine, loaded.layers[1].track_running_stats) == (True, True)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_model_file_with_a_negative_batch_count_is_refused(tmp_path):
    model = vn.Sequential([L.Dense(3, 4), L.BatchNorm1D(4, momentum=None)], seed=0)
    model.layers[1].state["num_batches_tracked"][...] = -2
    path = tmp_path / "bad.vecnn"
    path.write_bytes(io.dumps(io.model_tensors(model), io.model_meta(model)))
    with pytest.raises(ValueError, match="num_batches_tracked is negative"):
        vn.load(path)
