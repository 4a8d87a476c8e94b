"""Thread control and the array-module lookup."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import vecnn as vn
from vecnn import backend


def blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_set_num_threads_limits_blas_and_lifts():
    before = blas_threads()
    try:
        vn.set_num_threads(1)
        assert blas_threads() and all(n == 1 for n in blas_threads())
    finally:
        vn.set_num_threads(None)
    assert blas_threads() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_set_num_threads_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="positive integer"):
        vn.set_num_threads(bad)


def test_array_module_is_numpy_for_numpy_arrays():
    assert backend.array_module(np.zeros(2)) is np
    assert backend.to_numpy(np.ones(3)).sum() == 3
