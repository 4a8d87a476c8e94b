import numpy as np
import pytest
from hypothesis import settings

# CI runs must be reproducible: property tests draw the same examples every run, without deadlines
# (the machines are shared and timing varies).
settings.register_profile("vecnn", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("vecnn")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=["numba", "numpy"])
def cpu_backend(request, monkeypatch):
    """Run a test on each CPU backend of ``vecnn.ops``: the compiled one (when numba is here)
    and the NumPy reference."""
    from vecnn import kernels, ops

    if request.param == "numba":
        if kernels.get() is None:
            pytest.skip("numba kernels unavailable: " + str(kernels._kernels.error))
    else:
        monkeypatch.setattr(kernels, "enabled", False)
    assert ops.cpu().name == request.param
    return request.param
