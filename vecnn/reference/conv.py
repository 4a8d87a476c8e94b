"""Loop twin of Conv2D: the six nested loops that im2col + one GEMM replace.

For every sample ``i``, output channel ``o`` and output pixel ``(y, x)``::

    Y[i][o][y][x] = b[o] + sum over c, p, q of  X[i][c][y*sh + p*dh - ph][x*sw + q*dw - pw] * W[o][c][p][q]

where reads outside the image are the zero padding (skipped). The backward pass walks the same
loops and sends each output gradient ``g = dY[i][o][y][x]`` back along every product:
``dW[o][c][p][q] += g * X[...]``, ``dX[...] += g * W[o][c][p][q]``, ``db[o] += g``.
"""

from __future__ import annotations

from . import check_shape, register_twin, to_array, zeros


def _geometry(layer, x):
    """``(n, C, H, W, O, Ho, Wo)`` and the per-axis (kernel, stride, padding, dilation)."""
    check_shape(layer, x)
    n, C, H, W = x.shape
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    (ph, pw), (dh, dw) = layer.padding, layer.dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"reference twin of {layer!r}: input {tuple(x.shape)} is smaller than the kernel")
    return (n, C, H, W, layer.out_channels, Ho, Wo), ((kh, sh, ph, dh), (kw, sw, pw, dw))


def _taps(size, k, s, p, d, out):
    """For output position ``out``: the (kernel offset, input position) pairs inside the image."""
    taps = []
    for j in range(k):
        pos = out * s + j * d - p
        if 0 <= pos < size:
            taps.append((j, pos))
    return taps


@register_twin("Conv2D")
class Conv2DTwin:
    @staticmethod
    def forward(layer, x, training=False):
        (n, C, H, W, O, Ho, Wo), (ax_h, ax_w) = _geometry(layer, x)
        X = x.tolist()  # (n, C, H, W)
        Wt = layer.params["W"].tolist()  # (O, C, kh, kw)
        b = layer.params["b"].tolist() if layer.bias else [0.0] * O
        Y = zeros((n, O, Ho, Wo))
        for i in range(n):  # every sample
            for o in range(O):  # every output channel
                for y in range(Ho):  # every output row
                    rows = _taps(H, *ax_h, y)
                    for xo in range(Wo):  # every output column
                        cols = _taps(W, *ax_w, xo)
                        z = b[o]
                        for c in range(C):  # every input channel
                            for p, r in rows:  # every kernel row
                                for q, s in cols:  # every kernel column
                                    z += X[i][c][r][s] * Wt[o][c][p][q]
                        Y[i][o][y][xo] = z
        return to_array(Y, x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        (n, C, H, W, O, Ho, Wo), (ax_h, ax_w) = _geometry(layer, x)
        X = x.tolist()
        dY = grad_y.tolist()  # (n, O, Ho, Wo)
        Wt = layer.params["W"].tolist()
        kh, kw = layer.kernel_size
        dX = zeros((n, C, H, W))
        dW = zeros((O, C, kh, kw))
        db = zeros((O,))
        for i in range(n):
            for o in range(O):
                for y in range(Ho):
                    rows = _taps(H, *ax_h, y)
                    for xo in range(Wo):
                        cols = _taps(W, *ax_w, xo)
                        g = dY[i][o][y][xo]
                        db[o] += g
                        for c in range(C):
                            for p, r in rows:
                                for q, s in cols:
                                    dW[o][c][p][q] += g * X[i][c][r][s]
                                    dX[i][c][r][s] += g * Wt[o][c][p][q]
        dtype = layer.params["W"].dtype
        grads = {"W": to_array(dW, dtype)}
        if layer.bias:
            grads["b"] = to_array(db, dtype)
        return to_array(dX, x.dtype), grads
