"""Loop twin of Dense: ``Z[i][j] = b[j] + sum_k X[i][k] W[k][j]``, one multiply-add at a time.

This is the code ``Z = X @ W + b`` replaces: three nested loops over samples ``i``, units ``j``
and input features ``k``. Shapes: X ``(n, in)``, W ``(in, out)``, b ``(out,)``, Z ``(n, out)``.
"""

from __future__ import annotations

from . import check_shape, register_twin, to_array, zeros


@register_twin("Dense")
class DenseTwin:
    @staticmethod
    def forward(layer, x, training=False):
        check_shape(layer, x)
        X = x.tolist()  # (n, in)
        W = layer.params["W"].tolist()  # (in, out)
        b = layer.params["b"].tolist() if layer.bias else None
        n, n_in, n_out = len(X), layer.in_features, layer.out_features
        Z = zeros((n, n_out))
        for i in range(n):  # every sample
            for j in range(n_out):  # every unit
                z = b[j] if b is not None else 0.0
                for k in range(n_in):  # every input feature
                    z += X[i][k] * W[k][j]
                Z[i][j] = z
        return to_array(Z, x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        check_shape(layer, x)
        X = x.tolist()  # (n, in)
        dZ = grad_y.tolist()  # (n, out)
        W = layer.params["W"].tolist()  # (in, out)
        n, n_in, n_out = len(X), layer.in_features, layer.out_features
        dW = zeros((n_in, n_out))  # dW[k][j] = sum_i X[i][k] dZ[i][j]
        db = zeros((n_out,))  # db[j] = sum_i dZ[i][j]
        dX = zeros((n, n_in))  # dX[i][k] = sum_j dZ[i][j] W[k][j]
        want_dX = layer.input_grad  # the first layer of a model skips dX
        for i in range(n):
            for j in range(n_out):
                g = dZ[i][j]
                db[j] += g
                for k in range(n_in):
                    dW[k][j] += X[i][k] * g
                    if want_dX:
                        dX[i][k] += g * W[k][j]
        dtype = layer.params["W"].dtype
        grads = {"W": to_array(dW, dtype)}
        if layer.bias:
            grads["b"] = to_array(db, dtype)
        return (to_array(dX, x.dtype) if want_dX else None), grads
