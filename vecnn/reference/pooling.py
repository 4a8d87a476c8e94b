"""Loop twins of MaxPool2D, AvgPool2D and GlobalAvgPool2D: one window at a time.

MaxPool: each window's output is its largest value; the gradient goes to the *first* largest
in row-major order (as in PyTorch), padding being ``-inf`` (never chosen). AvgPool: the sum of
the window's in-image values divided by ``kh*kw`` (zero padding counts, PyTorch's default);
each input in the window gets ``g / (kh*kw)``. GlobalAvgPool2D: the mean over the whole image.
"""

from __future__ import annotations

from . import check_shape, register_twin, to_array, zeros


def _windows(layer, x):
    """``(n, C, H, W, Ho, Wo)`` and, for each output row / column, its in-image input positions."""
    check_shape(layer, x)
    n, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"reference twin of {layer!r}: input {tuple(x.shape)} is smaller than the window")
    rows = [[r for r in range(y * sh - ph, y * sh - ph + kh) if 0 <= r < H] for y in range(Ho)]
    cols = [[s for s in range(xo * sw - pw, xo * sw - pw + kw) if 0 <= s < W] for xo in range(Wo)]
    return (n, C, H, W, Ho, Wo), rows, cols


def _argmax(plane, rows, cols):
    """Value and position of the first largest value (row-major) of one window."""
    best, where = None, None
    for r in rows:
        for s in cols:
            v = plane[r][s]
            if best is None or v > best:  # strictly greater: first one wins
                best, where = v, (r, s)
    return best, where


@register_twin("MaxPool2D")
class MaxPool2DTwin:
    @staticmethod
    def forward(layer, x, training=False):
        (n, C, H, W, Ho, Wo), rows, cols = _windows(layer, x)
        X = x.tolist()
        Y = zeros((n, C, Ho, Wo))
        for i in range(n):  # every sample
            for c in range(C):  # every channel
                for y in range(Ho):  # every window
                    for xo in range(Wo):
                        Y[i][c][y][xo] = _argmax(X[i][c], rows[y], cols[xo])[0]
        return to_array(Y, x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        (n, C, H, W, Ho, Wo), rows, cols = _windows(layer, x)
        X, dY = x.tolist(), grad_y.tolist()
        dX = zeros((n, C, H, W))
        for i in range(n):
            for c in range(C):
                for y in range(Ho):
                    for xo in range(Wo):
                        r, s = _argmax(X[i][c], rows[y], cols[xo])[1]
                        dX[i][c][r][s] += dY[i][c][y][xo]  # overlapping windows add up
        return to_array(dX, x.dtype), {}


@register_twin("AvgPool2D")
class AvgPool2DTwin:
    @staticmethod
    def forward(layer, x, training=False):
        (n, C, H, W, Ho, Wo), rows, cols = _windows(layer, x)
        area = layer.kernel_size[0] * layer.kernel_size[1]  # padding counts in the mean
        X = x.tolist()
        Y = zeros((n, C, Ho, Wo))
        for i in range(n):
            for c in range(C):
                for y in range(Ho):
                    for xo in range(Wo):
                        total = 0.0
                        for r in rows[y]:
                            for s in cols[xo]:
                                total += X[i][c][r][s]
                        Y[i][c][y][xo] = total / area
        return to_array(Y, x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        (n, C, H, W, Ho, Wo), rows, cols = _windows(layer, x)
        area = layer.kernel_size[0] * layer.kernel_size[1]
        dY = grad_y.tolist()
        dX = zeros((n, C, H, W))
        for i in range(n):
            for c in range(C):
                for y in range(Ho):
                    for xo in range(Wo):
                        share = dY[i][c][y][xo] / area
                        for r in rows[y]:
                            for s in cols[xo]:
                                dX[i][c][r][s] += share
        return to_array(dX, x.dtype), {}


@register_twin("GlobalAvgPool2D")
class GlobalAvgPool2DTwin:
    @staticmethod
    def forward(layer, x, training=False):
        check_shape(layer, x)
        n, C, H, W = x.shape
        X = x.tolist()
        Y = zeros((n, C))
        for i in range(n):
            for c in range(C):
                total = 0.0
                for r in range(H):
                    for s in range(W):
                        total += X[i][c][r][s]
                Y[i][c] = total / (H * W)
        return to_array(Y, x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        check_shape(layer, x)
        n, C, H, W = x.shape
        dY = grad_y.tolist()
        dX = zeros((n, C, H, W))
        for i in range(n):
            for c in range(C):
                share = dY[i][c] / (H * W)
                for r in range(H):
                    for s in range(W):
                        dX[i][c][r][s] = share
        return to_array(dX, x.dtype), {}
