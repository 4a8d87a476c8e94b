"""Loop twin of Standardize: every value minus its mean, divided by its standard deviation."""

from __future__ import annotations

from . import check_shape, flatten, register_twin, to_array, unflatten


def _per_value(layer, name, dims):
    """The statistic ``name`` for every per-sample position, in C order (Python floats)."""
    table, sizes = layer.state[name].tolist(), layer.state[name].shape
    out = []
    for k in range(_count(dims)):
        idx, rest = [], k
        for d in reversed(dims):  # position k -> index tuple
            idx.append(rest % d)
            rest //= d
        v = table
        for i, size in zip(reversed(idx), sizes):  # size-1 axes of the statistic broadcast
            v = v[i if size > 1 else 0]
        out.append(v)
    return out


def _count(dims):
    n = 1
    for d in dims:
        n *= d
    return n


@register_twin("Standardize")
class StandardizeTwin:
    @staticmethod
    def forward(layer, x, training=False):
        check_shape(layer, x)
        dims = x.shape[1:]
        mean, std = _per_value(layer, "mean", dims), _per_value(layer, "std", dims)
        out = []
        for sample in x.tolist():  # every sample, every value
            flat = flatten(sample)
            out.append(unflatten([(flat[k] - mean[k]) / std[k] for k in range(len(flat))], dims))
        return to_array(out, x.dtype).reshape(x.shape)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        check_shape(layer, x)
        dims = x.shape[1:]
        std = _per_value(layer, "std", dims)
        dX = []
        for sample in grad_y.tolist():  # dX = dY / std, value by value
            flat = flatten(sample)
            dX.append(unflatten([flat[k] / std[k] for k in range(len(flat))], dims))
        return to_array(dX, x.dtype).reshape(x.shape), {}
