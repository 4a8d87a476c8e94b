"""Loop twin of Flatten: copy each sample's values, in C·H·W order, into one row."""

from __future__ import annotations

from . import check_shape, flatten, register_twin, to_array, unflatten


@register_twin("Flatten")
class FlattenTwin:
    @staticmethod
    def forward(layer, x, training=False):
        check_shape(layer, x)
        X = x.tolist()  # (n, *dims)
        rows = []
        for sample in X:  # every sample
            rows.append(flatten(sample))  # (prod(dims),)
        return to_array(rows, x.dtype)  # (n, prod(dims))

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        check_shape(layer, x)
        dims = x.shape[1:]
        dX = []
        for row in grad_y.tolist():  # every sample: (prod(dims),) -> dims
            dX.append(unflatten(row, dims))
        return to_array(dX, x.dtype).reshape(x.shape), {}
