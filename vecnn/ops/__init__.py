"""The one compute boundary: a backend object per kind of array, looked up here from the arrays.

Layers, losses, optimizers and ``Sequential`` never call NumPy's compute functions, numba or
BLAS internals themselves: they ask ``ops.get(x)`` for the backend that owns their arrays and
compute and allocate through it (``backend.xp`` is its array module for the plain whole-array
code; its methods are the fused passes). Precedents: Chainer's ``get_array_module`` and its
``intel64`` accelerator switch, Keras's per-backend folders.

Backends:

- ``numpy`` (``NumPyBackend``): plain whole-array code. Portable; the reference the others are
  tested against, and the fallback whenever a faster version does not apply.
- ``numba`` (``NumbaBackend``): NumPy arrays, the fused passes compiled (one pass over memory
  each), the memory-bound ones split across OpenBLAS's threads where verified. The CPU backend
  whenever numba is installed and ``vecnn.kernels.enabled`` (or ``use("numpy")``) allows.
- ``cupy`` (``CuPyBackend``): the same code on an NVIDIA GPU, cuBLAS for the products and
  CUDA kernels for the fused passes.

``report()`` (and ``vecnn backends``) says which backend serves each operation here and why a
faster one is off.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .. import kernels as _kernels
from .numpy_backend import NumPyBackend

#: the fused operations every backend provides (``report()`` says who serves each)
OPERATIONS = {
    "bias_relu": "Dense bias + ReLU, one pass over the product",
    "relu / relu_backward": "ReLU and its gradient",
    "relu_backward_bias": "ReLU gradient with the bias gradient (column sums)",
    "column_sums": "bias gradient of a Dense layer",
    "softmax_cross_entropy": "softmax cross-entropy with its gradient and accuracy",
    "bn_stats / bn_normalize / bn_grad_sums / bn_input_grad": "BatchNorm statistics and gradients",
    "im2col / col2im": "convolution columns and their adjoint",
    "maxpool_forward / maxpool_backward": "max pooling (with a fused ReLU)",
    "optimizer_update": "SGD / Adam / AdamW / RMSProp update with the undo copy",
    "gather": "the mini-batch gather",
    "all_finite": "the finiteness check",
}

_numpy = NumPyBackend()
_cpu_cache: dict = {}


def use(name: str) -> None:
    """Choose the CPU backend: ``"numba"`` (compiled, when available; the default) or
    ``"numpy"`` (the reference). The same switch as ``vecnn.kernels.enabled``."""
    if name not in ("numba", "numpy"):
        raise ValueError(f"vecnn.ops.use: expected 'numba' or 'numpy', received {name!r}")
    _kernels.enabled = name == "numba"


def cpu() -> NumPyBackend:
    """The CPU backend in use: compiled (numba) when available and enabled, else NumPy."""
    compiled = _kernels.get()
    if compiled is None:
        return _numpy
    backend = _cpu_cache.get(id(compiled))
    if backend is None:
        from .numba_backend import NumbaBackend

        backend = _cpu_cache[id(compiled)] = NumbaBackend(compiled)
    return backend


def numpy_backend() -> NumPyBackend:
    """The NumPy backend (the reference), whatever the switch says."""
    return _numpy


def by_name(name: str) -> NumPyBackend:
    """The backend called ``name`` ("numpy", "numba", "cupy"); a ``ValueError`` when it is
    not available here."""
    if name == "numpy":
        return _numpy
    if name == "cupy":
        return gpu()
    backend = cpu()
    if backend.name != name:
        raise ValueError(f"vecnn.ops: backend {name!r} is not available here ({_kernels._kernels.error or 'off'})")
    return backend


#: array types other backends own, checked before the built-in ones (``register``)
_registered: dict = {}


def register(array_type: type, backend: NumPyBackend | None) -> None:
    """Make ``backend`` the owner of ``array_type`` arrays (an accelerator of your own, or a
    stand-in device in tests); ``register(array_type, None)`` undoes it."""
    if backend is None:
        _registered.pop(array_type, None)
    else:
        _registered[array_type] = backend


def get(*arrays: Any) -> NumPyBackend:
    """The backend owning ``arrays`` (the first array decides; scalars and None are skipped).

    A type no backend knows (a PyTorch tensor, a list) is a ``ValueError`` naming it."""
    for a in arrays:
        t = type(a)
        if t is np.ndarray:
            return cpu()
        if a is None or isinstance(a, (int, float, np.generic)):
            continue
        for owned, backend in _registered.items():
            if isinstance(a, owned):
                return backend
        if isinstance(a, np.ndarray):
            return cpu()
        if t.__module__.startswith("cupy"):
            return gpu()
        raise ValueError(
            f"vecnn.ops: no backend computes on {t.__module__}.{t.__qualname__} arrays; "
            f"expected numpy.ndarray (CPU) or cupy.ndarray (GPU)"
        )
    return cpu()


# -- the GPU --------------------------------------------------------------------------------
_gpu = None


def gpu_problem() -> str | None:
    """Why there is no GPU backend here (what is missing and how to get it), or None."""
    try:
        import cupy
    except ImportError as e:
        return (
            f"CuPy is not installed ({e}); on a machine with an NVIDIA GPU install the extra "
            f"that fits its CUDA: pip install 'vecnn[gpu-cuda13]' (CUDA 13) or 'vecnn[gpu-cuda12]' "
            f"(CUDA 12); `nvidia-smi` shows the CUDA version"
        )
    except Exception as e:  # a broken install: say so rather than hide it
        return f"CuPy failed to import: {type(e).__name__}: {e}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        runtime = _cuda_version(lambda: cupy.cuda.runtime.runtimeGetVersion())
        driver = _cuda_version(lambda: cupy.cuda.runtime.driverGetVersion())
        if runtime and driver and driver != "none" and driver < runtime:
            return (
                f"CuPy is built for CUDA {runtime} but the driver supports CUDA {driver}: install "
                f"the vecnn extra for the driver's CUDA (gpu-cuda12 or gpu-cuda13)"
            )
        return f"no usable CUDA device ({type(e).__name__}: {e})"
    if count < 1:
        return "CuPy finds no CUDA device on this machine"
    return None


def _cuda_version(read):
    try:
        v = int(read())
    except Exception:
        return None
    return "none" if v == 0 else f"{v // 1000}.{v % 1000 // 10}"


def gpu() -> NumPyBackend:
    """The CuPy backend; a ``ValueError`` naming what is missing (and how to get it) where
    there is no usable GPU."""
    global _gpu
    if _gpu is None:
        problem = gpu_problem()
        if problem is not None:
            raise ValueError(f"no GPU backend: {problem}")
        import cupy

        from .cupy_backend import CuPyBackend

        _gpu = CuPyBackend(cupy)
    return _gpu


def select_gpu(local_rank: int) -> int:
    """Make GPU ``local_rank % (GPUs on this node)`` this process's CUDA device, before
    anything is allocated on it: one rank per GPU under ``mpiexec`` (``vecnn.distributed``).
    Returns the device's index; a ``ValueError`` where there is no GPU backend."""
    xp = gpu().xp
    index = int(local_rank) % max(1, int(xp.cuda.runtime.getDeviceCount()))
    xp.cuda.Device(index).use()
    return index


def device(name: str) -> NumPyBackend:
    """The backend for ``"cpu"``, ``"gpu"`` or ``"auto"`` (the GPU when there is one)."""
    if name == "cpu":
        return cpu()
    if name == "gpu":
        return gpu()
    if name == "auto":
        return gpu() if gpu_problem() is None else cpu()
    raise ValueError(f"device: expected 'cpu', 'gpu' or 'auto', received {name!r}")


# -- saying what runs -----------------------------------------------------------------------
def report() -> dict[str, Any]:
    """What computes here: the backends (available or not, and why), which backend serves
    each fused operation on the CPU and on the GPU, and the BLAS. Plain JSON data."""
    compiled = _kernels.get()
    numba_reason = None
    if compiled is None:
        numba_reason = (
            "turned off (vecnn.kernels.enabled = False)"
            if not _kernels.enabled
            else f"numba kernels unavailable: {_kernels._kernels.error or 'unknown error'}"
        )
    split, split_reason = None, None
    if compiled is not None:
        from . import _openblas

        split = _openblas.get()
        if split is None:
            split_reason = _openblas.why_not()
    gpu_reason = gpu_problem()
    cpu_name = "numba" if compiled is not None else "numpy"
    threaded = {"optimizer_update", "gather", "all_finite"}
    operations = []
    for op, what in OPERATIONS.items():
        served = cpu_name
        note = numba_reason or ""
        if compiled is not None and op in threaded:
            served = "numba + OpenBLAS threads" if split is not None else "numba (one thread)"
            note = "" if split is not None else f"OpenBLAS thread split off: {split_reason}"
        operations.append(
            {"operation": op, "what": what, "cpu": served, "gpu": "cupy" if gpu_reason is None else None, "note": note}
        )
    backends = [
        {
            "name": "numpy",
            "device": "cpu",
            "available": True,
            "in_use": compiled is None,
            "reason": NumPyBackend.summary,
        },
        {
            "name": "numba",
            "device": "cpu",
            "available": compiled is not None,
            "in_use": compiled is not None,
            "reason": "NumPy arrays with the fused passes compiled by numba" if compiled is not None else numba_reason,
        },
        {
            "name": "cupy",
            "device": "gpu",
            "available": gpu_reason is None,
            "in_use": False,
            "reason": "CUDA kernels and cuBLAS on an NVIDIA GPU" if gpu_reason is None else gpu_reason,
        },
    ]
    return {"backends": backends, "operations": operations, "blas": _blas()}


def _blas() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info

        return [
            {
                k: i.get(k)
                for k in (
                    "user_api",
                    "internal_api",
                    "version",
                    "num_threads",
                    "architecture",
                    "threading_layer",
                    "filepath",
                )
            }
            for i in threadpool_info()
        ]
    except Exception as e:  # reported, not hidden
        return [{"error": f"{type(e).__name__}: {e}"}]


def format_report(info: dict[str, Any] | None = None) -> str:
    """``report()`` as the text ``vecnn backends`` prints."""
    info = report() if info is None else info
    lines = ["backends:"]
    for b in info["backends"]:
        mark = "in use" if b["in_use"] else ("available" if b["available"] else "off")
        lines.append(f"  {b['name']:<6} {b['device']:<4} {mark:<10} {b['reason']}")
    lines.append("")
    lines.append("fused operations (CPU backend; GPU backend):")
    width = max(len(o["operation"]) for o in info["operations"])
    for o in info["operations"]:
        gpu_text = o["gpu"] or "-"
        note = f"  ({o['note']})" if o["note"] else ""
        lines.append(f"  {o['operation']:<{width}}  {o['cpu']:<25} {gpu_text:<5}{note}".rstrip())
    lines.append("")
    lines.append("BLAS:")
    for b in info["blas"]:
        if "error" in b:
            lines.append(f"  could not inspect: {b['error']}")
            continue
        lines.append(
            f"  {b.get('internal_api')} {b.get('version')} ({b.get('user_api')}), "
            f"{b.get('num_threads')} threads, kernel {b.get('architecture')}, "
            f"{b.get('threading_layer')}: {b.get('filepath')}"
        )
    return "\n".join(lines)


def loaded_gpu_module():
    """CuPy when it is already imported (never imports it), else None."""
    return sys.modules.get("cupy")
