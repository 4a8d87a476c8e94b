"""Each optimizer's update rule equals torch.optim's on the same gradient sequence."""

import math

import numpy as np
import pytest
import torch

import vecnn as vn
from vecnn import kernels, optim


@pytest.fixture(params=["numpy", "fused"])
def path(request, monkeypatch):
    """Run a test on the readable NumPy rules and on the fused numba kernels."""
    if request.param == "fused":
        if kernels.get() is None:
            pytest.skip("numba is not installed: the fused kernels are not in use")
    else:
        monkeypatch.setattr(kernels, "enabled", False)
    return request.param


CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    (optim.RMSProp, torch.optim.RMSprop, dict(lr=1e-2)),
    (optim.RMSProp, torch.optim.RMSprop, dict(lr=1e-2, alpha=0.9, weight_decay=0.05)),
]


@pytest.mark.parametrize("ours,theirs,kw", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_matches_torch(ours, theirs, kw, rng, path):
    p0 = rng.standard_normal(50).astype(np.float32)
    grads = rng.standard_normal((12, 50)).astype(np.float32)
    p = p0.copy()
    opt = ours(**kw)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = theirs([tp], **kw)
    for g in grads:
        opt.step(p, g.copy())
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        assert p.dtype == np.float32
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_clip_norm_bounds_global_norm(path):
    opt = optim.SGD(lr=1.0, clip_norm=0.5)
    p = np.zeros(4, np.float32)
    g = np.array([3, 4, 0, 0], np.float32)  # norm 5
    opt.step(p, g)
    assert math.isclose(float(np.linalg.norm(p)), 0.5, rel_tol=1e-4)
    small = np.array([0.1, 0, 0, 0], np.float32)  # under the bound: untouched
    q = np.zeros(4, np.float32)
    optim.SGD(lr=1.0, clip_norm=0.5).step(q, small.copy())
    np.testing.assert_array_equal(q, -small)


def test_schedules():
    assert optim.StepLR(2, 0.5)(1, 1.0) == 1.0
    assert optim.StepLR(2, 0.5)(3, 1.0) == 0.5
    cos = optim.CosineLR(10, min_lr=0.1)
    assert cos(1, 1.0) == pytest.approx(1.0)
    assert cos(11, 1.0) == pytest.approx(0.1)
    assert cos(6, 1.0) == pytest.approx(0.55)
    warm = optim.WarmupLR(4, after=optim.StepLR(1, 0.5))
    assert [warm(s, 1.0) for s in (1, 2, 4, 5, 6)] == [0.25, 0.5, 1.0, 1.0, 0.5]
    opt = optim.SGD(lr=1.0, schedule=optim.StepLR(1, 0.5))
    p = np.zeros(1, np.float32)
    for _ in range(3):
        opt.step(p, np.ones(1, np.float32))
    assert p[0] == pytest.approx(-(1 + 0.5 + 0.25))


def test_config_round_trip_and_state(path):
    opt = optim.AdamW(lr=3e-3, weight_decay=0.02, schedule=optim.WarmupLR(5, optim.CosineLR(50)))
    p = np.ones(8, np.float32)
    for _ in range(3):
        opt.step(p, np.full(8, 0.5, np.float32))
    clone = optim.AdamW.from_config(opt.config())
    clone.load_state_dict(opt.state_dict())
    p2 = p.copy()
    g = np.linspace(-1, 1, 8).astype(np.float32)
    opt.step(p, g.copy())
    clone.step(p2, g.copy())
    np.testing.assert_array_equal(p, p2)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSProp])
def test_state_of_an_optimizer_that_never_stepped_loads_and_continues_identically(cls, path):
    """A checkpoint written before the first step (epoch 0) holds no state buffers: loading it
    gives an optimizer that steps exactly like a fresh one (this was KeyError 'm')."""
    kw = dict(lr=0.05, momentum=0.9) if cls is optim.SGD else dict(lr=0.05)
    fresh, loaded = cls(**kw), cls.from_config(cls(**kw).config())
    loaded.load_state_dict({k: np.asarray(v) for k, v in cls(**kw).state_dict().items()})
    p1 = np.linspace(-1, 1, 9).astype(np.float32)
    p2 = p1.copy()
    for i in range(3):
        g = np.cos(np.arange(9) + i).astype(np.float32)
        fresh.step(p1, g.copy())
        loaded.step(p2, g.copy())
    np.testing.assert_array_equal(p1, p2)


def test_malformed_optimizer_state_is_a_value_error_naming_it():
    opt = optim.Adam(lr=0.1)
    p = np.ones(4, np.float32)
    opt.step(p, np.ones(4, np.float32))
    state = opt.state_dict()
    with pytest.raises(ValueError, match="lacks 'v'"):
        optim.Adam().load_state_dict({"t": state["t"], "m": state["m"]})
    with pytest.raises(ValueError, match="step count 't'"):
        optim.Adam().load_state_dict({"m": state["m"], "v": state["v"]})
    with pytest.raises(ValueError, match="'v' must hold finite"):
        optim.Adam().load_state_dict({**state, "v": np.full(4, np.nan, np.float32)})
    with pytest.raises(ValueError, match="1-D and of one size"):
        optim.Adam().load_state_dict({**state, "v": np.ones(3, np.float32)})


@pytest.mark.parametrize(
    "bad", [dict(lr=0), dict(lr=-1), dict(lr=float("nan")), dict(weight_decay=-1), dict(clip_norm=0)]
)
def test_bad_arguments(bad):
    with pytest.raises(ValueError, match="SGD"):
        optim.SGD(**{"lr": 0.1, **bad})


def test_get():
    assert isinstance(optim.get("adam"), optim.Adam)
    assert isinstance(optim.get("SGD", lr=0.1), optim.SGD)
    with pytest.raises(ValueError, match="expected one of"):
        optim.get("adagrad")


def test_state_survives_between_fits(rng):
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = vn.Sequential([vn.layers.Dense(3, 2)], seed=0)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    opt = model.optimizer
    assert opt.t == 4
    m_before = opt.state["m"].copy()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert model.optimizer is opt and opt.t == 8
    assert not np.array_equal(opt.state["m"], m_before)


@pytest.mark.parametrize(
    "make,bad",
    [
        (lambda: optim.SGD(lr=1e30, momentum=0.9), 1e10),  # finite gradient, overflowing update
        (lambda: optim.RMSProp(lr=1e38, eps=1e-30), 1e10),
        (lambda: optim.Adam(lr=0.1), np.inf),  # non-finite gradient
        (lambda: optim.SGD(lr=0.1), np.nan),
        (lambda: optim.Adam(lr=0.1), np.nan),  # NaN must survive the flush of
        (lambda: optim.SGD(lr=0.1, momentum=0.9), np.nan),  # tiny state to zero
        (lambda: optim.RMSProp(lr=0.1), np.nan),
    ],
)
def test_step_reports_non_finite_and_undo_restores(make, bad, path):
    opt = make()
    p = np.linspace(-1, 1, 40).astype(np.float32)
    before = p.copy()
    g = np.full(40, 1e10, np.float32)
    g[3] = bad
    assert opt.step(p, g) is False
    opt.undo(p)
    np.testing.assert_array_equal(p, before)
    assert all(not v.any() for v in opt.state.values()) and opt.t == 0
    assert opt.step(p, np.zeros(40, np.float32)) is True and np.array_equal(p, before)


def test_fused_and_numpy_paths_agree(rng, monkeypatch):
    if kernels.get() is None:
        pytest.skip("numba is not installed")
    p0 = rng.standard_normal(1000).astype(np.float32)
    gs = rng.standard_normal((5, 1000)).astype(np.float32)
    for make in (
        lambda: optim.AdamW(lr=1e-2),
        lambda: optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
        lambda: optim.RMSProp(lr=1e-2, weight_decay=0.1),
    ):
        results = []
        for enabled in (True, False):
            monkeypatch.setattr(kernels, "enabled", enabled)
            p, opt = p0.copy(), make()
            for g in gs:
                opt.step(p, g.copy())
            results.append(p)
        np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
