"""`vecnn backends` (what computes here) and `--device` (where `vecnn train` computes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vecnn as vn
from vecnn import kernels, ops
from vecnn.cli import main

VECNN = [sys.executable, "-m", "vecnn.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TINY = ["--model", "dense:10", "--epochs", "1", "--quiet"]  # one Dense layer on digits: about a second


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_cupy(monkeypatch):
    """CuPy absent, whatever this machine has: ``import cupy`` fails, no GPU backend is cached."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(ops, "_gpu", None)


def one_error_line(err, command="train"):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"vecnn {command}: error: "), lines[0]
    return lines[0]


# -- vecnn backends -----------------------------------------------------------------------------
def test_backends_lists_every_backend_and_every_operation(capsys):
    code, out, err = cli(capsys, "backends")
    assert code == 0 and err == ""
    assert out == ops.format_report() + "\n"
    rows = {line.split()[0]: line for line in out.split("fused operations")[0].splitlines()[1:] if line.strip()}
    assert set(rows) == {"numpy", "numba", "cupy"}
    assert rows["numpy"].split()[1] == "cpu" and rows["cupy"].split()[1] == "gpu"
    for op in ops.OPERATIONS:
        assert f"  {op}  " in out, op
    assert "BLAS:" in out


def test_backends_json_agrees_with_report(capsys):
    code, out, err = cli(capsys, "backends", "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info == json.loads(json.dumps(ops.report()))
    assert [b["name"] for b in info["backends"]] == ["numpy", "numba", "cupy"]
    assert [o["operation"] for o in info["operations"]] == list(ops.OPERATIONS)
    assert sum(b["in_use"] for b in info["backends"]) == 1


def test_backends_says_numba_is_off_and_why(capsys, monkeypatch):
    monkeypatch.setattr(kernels, "enabled", False)
    code, out, _ = cli(capsys, "backends")
    assert code == 0
    numba = next(line for line in out.splitlines() if line.split()[:1] == ["numba"])
    assert numba.split()[2] == "off" and "vecnn.kernels.enabled = False" in numba
    assert next(line for line in out.splitlines() if line.split()[:1] == ["numpy"]).split()[2:4] == ["in", "use"]
    code, out, _ = cli(capsys, "backends", "--json")
    info = json.loads(out)
    numba = next(b for b in info["backends"] if b["name"] == "numba")
    assert not numba["available"] and not numba["in_use"] and "vecnn.kernels.enabled = False" in numba["reason"]
    assert {o["cpu"] for o in info["operations"]} == {"numpy"}


def test_backends_without_cupy_says_how_to_get_it(capsys, no_cupy):
    code, out, _ = cli(capsys, "backends", "--json")
    cupy = next(b for b in json.loads(out)["backends"] if b["name"] == "cupy")
    assert not cupy["available"] and "pip install" in cupy["reason"] and "gpu-cuda12" in cupy["reason"]
    assert all(o["gpu"] is None for o in json.loads(out)["operations"])


def test_backends_command_line():
    r = subprocess.run(VECNN + ["backends"], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("backends:\n") and "fused operations" in r.stdout


# -- vecnn train --device ---------------------------------------------------------------------
def test_train_on_a_gpu_where_there_is_none_exits_2_before_making_the_run(capsys, tmp_path, no_cupy):
    out = tmp_path / "runs" / "r"
    code, stdout, err = cli(capsys, "train", "--device", "gpu", "--out", str(out), *TINY)
    assert code == 2 and stdout == ""
    line = one_error_line(err)
    assert "--device gpu" in line and "GPU" in line and "CuPy" in line and "pip install" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(ops.gpu_problem() is None, reason="this machine has a GPU")
def test_train_on_a_gpu_where_there_is_none_command_line(tmp_path):
    out = tmp_path / "r"
    r = subprocess.run(
        VECNN + ["train", "--device", "gpu", "--out", str(out), *TINY],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    line = one_error_line(r.stderr)
    assert "GPU" in line and "pip install" in line
    assert not out.exists()


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_train_on_the_cpu(capsys, tmp_path, device):
    out = tmp_path / "r"
    code, stdout, err = cli(capsys, "train", "--device", device, "--out", str(out), *TINY)
    assert code == 0, err
    assert stdout.startswith("test accuracy: ")
    expected = "cpu" if device == "cpu" or ops.gpu_problem() is not None else "gpu"
    assert json.loads((out / "config.json").read_text())["device"] == expected
    assert vn.load(out / "model.vecnn").device == "cpu"  # model files load on the CPU


def test_train_header_names_the_device(capsys, tmp_path):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--out", str(out), "--model", "dense:10", "--epochs", "1")
    assert code == 0, err
    header = err.strip().splitlines()[0]
    assert header.startswith("training dense:10 on digits: ") and "1 epoch," in header
    assert f"device cpu ({ops.cpu().name} backend)" in header and str(out) in header
    assert json.loads((out / "config.json").read_text())["device"] == "cpu"  # the default


def test_resume_continues_on_the_recorded_device(capsys, tmp_path, no_cupy):
    out = tmp_path / "r"
    assert cli(capsys, "train", "--out", str(out), *TINY)[0] == 0
    config = out / "config.json"
    saved = json.loads(config.read_text())
    # a run recorded on a GPU, resumed here without one: refused, saying how to go on
    config.write_text(json.dumps({**saved, "device": "gpu"}))
    code, _, err = cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert code == 2
    line = one_error_line(err)
    assert "config.json" in line and "pip install" in line and "--device cpu" in line
    # --device may change on resume: it says how to go on, not what the run is
    code, _, err = cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "2", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert "device cpu" in err and json.loads(config.read_text())["device"] == "cpu"
    # a value vecnn never writes is refused naming the field
    config.write_text(json.dumps({**json.loads(config.read_text()), "device": "tpu"}))
    code, _, err = cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "3", "--quiet")
    assert code == 2 and "field 'device'" in one_error_line(err)


def test_a_run_without_a_recorded_device_resumes_on_the_cpu(capsys, tmp_path):
    out = tmp_path / "r"
    assert cli(capsys, "train", "--out", str(out), *TINY)[0] == 0
    config = out / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "device"}))
    code, _, err = cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert code == 0, err
    assert "device cpu" in err and json.loads(config.read_text())["device"] == "cpu"


def test_unknown_device_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--device", "tpu", "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and "--device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_and_predict_take_a_device(capsys, tmp_path, no_cupy):
    out = tmp_path / "r"
    assert cli(capsys, "train", "--out", str(out), *TINY)[0] == 0
    model = str(out / "model.vecnn")
    code, stdout, err = cli(capsys, "evaluate", model, "--device", "cpu")
    assert code == 0 and "test accuracy: " in stdout, err
    code, _, err = cli(capsys, "evaluate", model, "--device", "gpu")
    assert code == 2 and "pip install" in one_error_line(err, "evaluate")
    _, _, X_test, _ = vn.data.load("digits")
    np.save(tmp_path / "x.npy", X_test[:2])
    code, stdout, err = cli(capsys, "predict", model, str(tmp_path / "x.npy"), "--device", "auto")
    assert code == 0 and len(stdout.strip().splitlines()) == 2, err


class _DeviceArray(np.ndarray):
    """An array on a stand-in GPU: slicing and ufuncs keep the type, so it stays there."""


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """A GPU backend without a GPU: NumPy arrays of their own type, registered with vecnn.ops."""
    if not hasattr(ops, "register"):
        pytest.skip("vecnn.ops.register (stand-in devices) not here")
    from vecnn.ops.numpy_backend import NumPyBackend

    class StandInGPU(NumPyBackend):
        name = "stand-in"
        device = "gpu"

        def __init__(self):
            super().__init__(np)
            self.ndarray = _DeviceArray

        def empty(self, shape, dtype):
            return np.empty(shape, dtype).view(_DeviceArray)

        def zeros(self, shape, dtype):
            return np.zeros(shape, dtype).view(_DeviceArray)

        def asarray(self, a, dtype=None):
            if isinstance(a, _DeviceArray) and (dtype is None or a.dtype == dtype):
                return a
            return np.array(a, dtype=dtype).view(_DeviceArray)

        def to_host(self, a):
            return np.array(a).view(np.ndarray)

    backend = StandInGPU()
    monkeypatch.setattr(ops, "_gpu", backend)
    monkeypatch.setattr(ops, "gpu_problem", lambda: None)
    ops.register(_DeviceArray, backend)
    yield backend
    ops.register(_DeviceArray, None)


def test_auto_trains_on_the_gpu_when_there_is_one(capsys, tmp_path, stand_in_gpu):
    code, _, err = cli(capsys, "train", "--device", "auto", "--out", str(tmp_path / "r"), *TINY)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device"] == "gpu"


def test_train_on_a_gpu(capsys, tmp_path, stand_in_gpu, monkeypatch):
    from vecnn.model import Sequential

    moved = []
    to = Sequential.to
    monkeypatch.setattr(Sequential, "to", lambda self, d: moved.append((d, self.device)) or to(self, d))
    out = tmp_path / "r"
    code, stdout, err = cli(
        capsys, "train", "--device", "gpu", "--out", str(out), "--model", "dense:10", "--epochs", "1"
    )
    assert code == 0, err
    assert "device gpu (stand-in backend)" in err.splitlines()[0]
    assert moved == [("gpu", "cpu")]  # moved once, before training
    assert json.loads((out / "config.json").read_text())["device"] == "gpu"
    # the same run on the CPU: the same numbers (to rounding)
    code, on_cpu, err = cli(
        capsys,
        "train",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "cpu"),
        "--model",
        "dense:10",
        "--epochs",
        "1",
        "--quiet",
    )
    assert code == 0, err
    assert stdout.splitlines()[0] == on_cpu.splitlines()[0]  # test accuracy: 0.XXXX
    metrics = [  # the epoch's wall time differs between devices; every figure must not
        {k: v for k, v in json.loads((d / "metrics.jsonl").read_text()).items() if k != "seconds"}
        for d in (out, tmp_path / "cpu")
    ]
    assert metrics[0] == pytest.approx(metrics[1], rel=1e-5)
    assert vn.load(out / "model.vecnn").device == "cpu"  # the file loads on the CPU
    # resuming continues on the recorded device; --device cpu moves the run back
    code, _, err = cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert code == 0 and "device gpu" in err, err
    code, _, err = cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "3", "--quiet", "--device", "cpu")
    assert code == 0 and "device cpu" in err, err
    assert json.loads((out / "config.json").read_text())["device"] == "cpu"


def test_train_on_a_gpu_refuses_workers(capsys, tmp_path, stand_in_gpu):
    code, _, err = cli(capsys, "train", "--device", "gpu", "--workers", "2", "--out", str(tmp_path / "r"), *TINY)
    assert code == 2 and "--workers 2" in one_error_line(err)
    assert not (tmp_path / "r").exists()


# -- the library ----------------------------------------------------------------------------------
def test_sequential_to_gpu_without_cupy_names_it(no_cupy):
    model = vn.Sequential([vn.layers.Dense(4, 2)])
    with pytest.raises(ValueError, match="CuPy") as e:
        model.to("gpu")
    assert "pip install" in str(e.value)
    assert model.device == "cpu" and model.to("auto") is model and model.to("cpu").device == "cpu"
