"""VecnnClassifier and VecnnRegressor pass scikit-learn's own estimator checks (check_estimator)."""

import warnings

import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from vecnn.sklearn import VecnnClassifier, VecnnRegressor  # noqa: E402

# The one check allowed to fail, and why: float32 rounding makes it impossible. (The classifier
# fails it; the regressor's predictions have so far stayed within the tolerance, an XPASS.)
FLOAT32 = {
    "check_sample_weight_equivalence_on_dense_data": (
        "float32 rounding: a sample of weight 2 and the same sample twice give the same mean loss "
        "mathematically, but the float32 sums run in another order, so the predictions after training "
        "differ by ~1e-6 relative, above the check's rtol=1e-7 (float32's epsilon is 1.2e-7)"
    )
}


def expected_failed_checks(estimator):
    return FLOAT32


@parametrize_with_checks([VecnnClassifier(), VecnnRegressor()], expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
