"""The GPU benchmark runs end to end on the CPU (``--device cpu``) on a tiny slice, refuses
``--device gpu`` without a GPU, and its one-shot script for a lent machine parses.
No timing is asserted."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vecnn import ops

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_run_reports_both_networks_both_batches_and_the_weight_check(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_gpu.py",
            "--device",
            "cpu",
            "--limit",
            "128",
            "--epochs",
            "1",
            "--check-epochs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "machine:" in r.stdout and "vecnn/pytorch" in r.stdout
    report = json.loads(out.read_text())
    assert report["complete"] and report["device"] == "cpu" and not report["errors"]
    cases = {(c["network"], c["batch_size"]): c for c in report["cases"]}
    assert set(cases) == {(n, b) for n in ("mlp", "cnn") for b in (128, 1024)}
    for c in cases.values():
        assert c["ratio"] > 0 and c["samples_per_epoch"] == 128 and c["epochs"] == 1
        for side in ("vecnn", "pytorch"):
            s = c["contenders"][side]
            assert s["samples_per_second"] > 0 and 0 <= s["test_accuracy"] <= 1
    check = report["weight_check"]
    assert "error" not in check, check
    assert check["max_abs_weight_diff"] >= 0 and len(check["max_abs_weight_diff_per_epoch"]) == 1
    assert 0 <= check["accuracy_cpu"] <= 1 and 0 <= check["accuracy_device"] <= 1
    assert check["ok"] == (check["max_abs_weight_diff"] <= check["goal"])


@pytest.mark.skipif(ops.gpu_problem() is None, reason="a GPU is here: --device gpu would run")
def test_gpu_without_a_gpu_exits_2_saying_what_is_missing():
    r = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--limit", "128"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "CuPy" in r.stderr and "pip install" in r.stderr
    assert ops.gpu_problem() in r.stderr


def test_a_failing_side_leaves_the_other_measured(monkeypatch):
    from vecnn.bench import gpu

    class Broken(gpu.TorchSide):
        def __init__(self, *a, **k):
            raise RuntimeError("no CUDA for this PyTorch")

    monkeypatch.setattr(gpu, "SIDES", (gpu.VecnnSide, Broken))
    report = gpu.run(
        "cpu", epochs=1, limit=64, synthetic=True, check_epochs=1, networks=("mlp",), batches=(32,), say=lambda s: None
    )
    (case,) = report["cases"]
    assert case["ratio"] is None and case["contenders"]["vecnn"]["samples_per_second"] > 0
    assert "no CUDA for this PyTorch" in case["failed"]["pytorch"]
    assert any("pytorch" in e for e in report["errors"])
    assert "pytorch failed" in gpu.format_report(report)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_device_check_script_parses():
    r = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "device_check.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
