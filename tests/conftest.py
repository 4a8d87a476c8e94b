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
