"""`vecnn bench` (the vectorization ladder): every rung computes the same math, FLOPs are counted
right, scaled rows are marked, and a tiny run writes the table, the JSON and the PNG charts.
No timings are asserted."""

import json

import numpy as np
import pytest

import vecnn as vn
from vecnn import backend
from vecnn import layers as L
from vecnn.bench import cases, ladder
from vecnn.bench import per_sample as PS
from vecnn.bench import scalar as S
from vecnn.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def close(a, e, tol=1e-4):
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol * max(1.0, float(np.abs(e).max())))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def restore_threads():
    yield
    backend.set_num_threads(None)


# -- the rungs compute the same math --------------------------------------------------------------
def test_per_sample_dense_equals_layer(rng):
    layer = L.Dense(7, 5, seed=1)
    layer.params["b"][...] = rng.standard_normal(5, dtype=np.float32)
    X, G = rng.standard_normal((6, 7), dtype=np.float32), rng.standard_normal((6, 5), dtype=np.float32)
    Z = layer.forward(X, training=True)
    dX = layer.backward(G)
    W, b = layer.params["W"], layer.params["b"]
    close(PS.dense_forward(W, b, X), Z)
    dXp, dWp, dbp = PS.dense_backward(W, X, G)
    close(dXp, dX)
    close(dWp, layer.grads["W"])
    close(dbp, layer.grads["b"])
    assert PS.dense_backward(W, X, G, input_grad=False)[0] is None
    assert dXp.dtype == dWp.dtype == np.float32


@pytest.mark.skipif(not hasattr(L, "Conv2D"), reason="Conv2D is not built yet")
@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 1}, {"padding": 1, "dilation": 2}])
def test_per_sample_conv_equals_layer(rng, kw):
    layer = L.Conv2D(3, 4, 3, seed=1, **kw)
    layer.params["b"][...] = rng.standard_normal(4, dtype=np.float32)
    X = rng.standard_normal((2, 3, 7, 6), dtype=np.float32)
    Y = layer.forward(X, training=True)
    G = rng.standard_normal(Y.shape, dtype=np.float32)
    dX = layer.backward(G)
    geo = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    Yp, cache = PS.conv_forward(layer.params["W"], layer.params["b"], X, **geo)
    close(Yp, Y)
    dXp, dWp, dbp = PS.conv_backward(layer.params["W"], X, G, cache, **geo)
    close(dXp, dX)
    close(dWp, layer.grads["W"])
    close(dbp, layer.grads["b"])


def test_per_sample_relu_and_cross_entropy_equal_vecnn(rng):
    X, G = rng.standard_normal((5, 6), dtype=np.float32), rng.standard_normal((5, 6), dtype=np.float32)
    relu = L.ReLU()
    close(PS.relu_forward(X), relu.forward(X, training=True))
    close(PS.relu_backward(X, G), relu.backward(G))
    Z, y = rng.standard_normal((5, 4), dtype=np.float32), rng.integers(0, 4, 5)
    loss = vn.losses.CrossEntropy()
    value = loss.forward(Z, y)
    assert PS.cross_entropy_forward(Z, y) == pytest.approx(value, rel=1e-5)
    close(PS.cross_entropy_backward(Z, y), loss.backward())


SIZES = (6, 5, 4, 3)


def _batch(rng, n=4):
    return rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n)


def _vecnn_step(X, y):
    """Gradients and updated parameters of one whole-batch step of the ladder's MLP."""
    model = vn.Sequential(cases.mlp_layers(SIZES), seed=0)
    loss, opt = vn.losses.CrossEntropy(), vn.optim.Adam(lr=1e-3)
    loss.forward(model.forward(X, training=True), y)
    model.backward(loss.backward())
    dense = [layer for layer in model.layers if layer.params]
    grads = [(d.grads["W"].copy(), d.grads["b"].copy()) for d in dense]
    opt.step(model.flat_params, model.flat_grads)
    return grads, [(d.params["W"], d.params["b"]) for d in dense]


def test_per_sample_mlp_step_equals_sequential(rng):
    X, y = _batch(rng)
    grads, new_params = _vecnn_step(X, y)
    dense = [layer for layer in vn.Sequential(cases.mlp_layers(SIZES), seed=0).layers if layer.params]
    params = [(d.params["W"].copy(), d.params["b"].copy()) for d in dense]
    _, ps_grads = PS.mlp_grads(params, X, y)
    for (gW, gb), (eW, eb) in zip(ps_grads, grads):
        close(gW, eW)
        close(gb, eb)
    PS.mlp_step(params, {}, X, y)
    for (pW, pb), (eW, eb) in zip(params, new_params):
        close(pW, eW, 1e-5)
        close(pb, eb, 1e-5)


def test_scalar_mlp_step_equals_sequential(rng):
    X, y = _batch(rng)
    grads, new_params = _vecnn_step(X, y)
    layers = vn.Sequential(cases.mlp_layers(SIZES), seed=0).layers
    value, twin_grads = S.mlp_grads(layers, vn.losses.CrossEntropy(), X, y)
    dense_grads = [g for g in twin_grads if g]
    for g, (eW, eb) in zip(dense_grads, grads):
        close(g["W"], eW)
        close(g["b"], eb)
    S.adam_update(layers, twin_grads, {})
    for d, (eW, eb) in zip([layer for layer in layers if layer.params], new_params):
        close(d.params["W"], eW, 1e-5)
        close(d.params["b"], eb, 1e-5)


# -- FLOP counting ------------------------------------------------------------------------------------
def test_flop_counts_match_the_layers_own_counts():
    n = 3
    dense = L.Dense(5, 4)
    fwd = n * dense.flops((5,))  # the layer's own forward count: 2 n in out
    assert fwd == 2 * 3 * 5 * 4
    assert cases.dense_flops(n, 5, 4) == 3 * fwd  # forward, dW and dX: three equal products
    assert cases.dense_flops(n, 5, 4, input_grad=False) == 2 * fwd
    # the MLP step: 6-5-4-3 without the first layer's dX
    per_layer = [2 * n * a * b for a, b in zip(SIZES, SIZES[1:])]
    assert cases.mlp_step_flops(n, SIZES) == 2 * per_layer[0] + 3 * per_layer[1] + 3 * per_layer[2]
    if hasattr(L, "Conv2D"):
        conv = L.Conv2D(2, 3, 3)
        _, Ho, Wo = conv.output_shape((2, 6, 5))
        assert cases.conv_flops(n, 2, 3, 3, Ho, Wo) == 3 * n * conv.flops((2, 6, 5))


def test_scaled_rungs_are_extrapolated_and_marked(monkeypatch):
    """A rung run on k/2 and k of n samples is extrapolated along the line through both times,
    counting its fixed per-call cost once, and says so (a fake clock: no real timing)."""
    clock = [0.0]
    monkeypatch.setattr(ladder.time, "perf_counter", lambda: clock[0])

    def work(m):  # 0.1 s per call plus 0.5 s per sample
        clock[0] += 0.1 + 0.5 * m

    cfg = ladder.Config.tiny(repeats=2, scalar_repeats=2)
    scaled = ladder._time_rung("scalar", (work, 4), cfg, 8)
    assert scaled["seconds"] == pytest.approx(0.1 + 0.5 * 8) and scaled["scaled_from"] == 4
    assert scaled["fit"]["samples"] == [2, 4]
    full = ladder._time_rung("scalar", (work, 8), cfg, 8)
    assert full["seconds"] == pytest.approx(0.1 + 0.5 * 8) and full["scaled_from"] is None
    parts = ladder._time_rung("scalar", [(work, 2), lambda: work(0)], cfg, 8)
    assert parts["seconds"] == pytest.approx(0.1 + 0.5 * 8 + 0.1) and parts["scaled_from"] == 2
    # one sample only: proportional scaling, fixed cost included n times
    assert ladder._time_rung("scalar", (work, 1), cfg, 8)["seconds"] == pytest.approx(8 * 0.6)
    assert ladder.extrapolate(1, 2.0, 2, 1.0, 10) == pytest.approx(5.0)  # noise: no positive slope


# -- a whole (tiny) run ----------------------------------------------------------------------------
def test_bench_tiny_run_writes_table_json_and_charts(tmp_path, capsys, restore_threads):
    out = tmp_path / "ladder.json"
    assert main(["bench", "--tiny", "--threads", "1", "--json", str(out), "--plots", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert {"machine", "numpy_blas", "threads", "peak", "ladder", "sweep", "skipped", "headline"} <= set(report)
    assert report["threads"] == 1 and report["machine"]["blas"]
    assert report["peak"]["n"] == 64 and report["peak"]["gflops"] > 0
    ops = {info["op"]: info for info in report["ladder"]}
    assert {"dense", "relu", "cross_entropy", "mlp_step"} <= set(ops)
    assert "conv2d" in ops or "conv2d" in report["skipped"]
    for info in report["ladder"]:
        rungs = {r["rung"]: r for r in info["rungs"]}
        assert {"per_sample", "vecnn"} <= set(rungs)
        for r in rungs.values():
            assert r["seconds"] > 0 and {"speedup_vs_scalar", "speedup_vs_per_sample", "gflops", "peak_share"} <= set(r)
            assert (r["gflops"] is None) == (info["flops"] == 0)
    # tiny: Dense and the MLP step run their scalar loops on 2 of 4 samples; ReLU on all of them
    assert ops["dense"]["rungs"][0]["rung"] == "scalar" and ops["dense"]["rungs"][0]["scaled_from"] == 2
    assert ops["mlp_step"]["rungs"][0]["scaled_from"] == 2
    assert ops["relu"]["rungs"][0]["scaled_from"] is None
    assert "scaled from 2 of 4 samples" in text and "BLAS used by numpy" in text
    assert {p["batch"] for p in report["sweep"]["points"]} == {1, 4, 16}
    assert report["headline"]["whole_batch_vs_per_sample"] > 0
    for name in ("ladder.png", "sweep.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG


def test_bench_without_torch_reports_it_skipped(restore_threads):
    report = ladder.run(ladder.Config.tiny(use_torch=False, sweep=(2,)), threads=1)
    assert "pytorch" in report["skipped"] and report["torch"] is None
    assert all(r["rung"] != "pytorch" for info in report["ladder"] for r in info["rungs"])
    assert all(p["rung"] == "vecnn" for p in report["sweep"]["points"])


def test_bench_rejects_bad_threads(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--threads", "0"])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err
