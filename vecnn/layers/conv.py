"""2-D convolution: a strided window view of the input, then one matrix product per batch.

``Conv2D`` takes and returns NCHW arrays (weights ``(out, in, kh, kw)``, as in PyTorch), but
lays its work out channels-last, because that is where the memory traffic is cheapest:

- im2col (the backend's, ``vecnn.ops``) copies the windows ``(N, Ho, Wo, kh, kw, C)`` of the
  input into a column matrix ``cols`` of shape ``(N*Ho*Wo, kh*kw*C [+1])``; with a bias the extra column holds
  ones, so the bias rides along in the GEMM and ``db`` falls out of the ``dW`` GEMM.
  (An NCHW input, e.g. a first layer of one or three channels, gets the transposed matrix
  ``(kh*kw*C [+1], N*Ho*Wo)``, whose rows are whole-image copies.)
- ``Y = cols @ Wm.T`` is one GEMM whose ``(N*Ho*Wo, O)`` result *is* the output in
  ``(N, Ho, Wo, O)`` memory order: it is returned as the NCHW view
  ``.transpose(0, 3, 1, 2)``, with no copy. Elementwise layers after it keep that memory
  order (NumPy allocates their results in the input's layout), so the next convolution
  reads its input channels-last for free.
- backward: ``[dW | db]^T = cols^T dY`` and ``dcols = dY Wm`` are GEMMs; the backend's
  col2im adds ``dcols`` back into ``dX`` (compiled: one pass; NumPy: one strided slice-add
  per kernel offset; GPU: one thread per input element): never a Python loop over samples or
  pixels, never a scatter with duplicate indices (``np.add.at``). The first layer of a model
  skips ``dX`` altogether.

Outputs and input gradients come from per-layer buffers (``backend.scratch``) that are reused
while nobody else holds them, so a training loop touches the same memory batch after batch
(no page faults, nothing new resident during an epoch) and a result a caller kept is never
overwritten. The column matrix is the only large temporary. When it would exceed the layer's budget
(``col_budget`` bytes, default the module-level ``COLUMN_BUDGET``) the batch is processed in
chunks of samples, with the same results.
"""

from __future__ import annotations

import math

import numpy as np

from .. import init, ops
from ..errors import fmt_shape
from ..limits import MAX_IMAGE_PIXELS, check_size
from ..ops.numpy_backend import offset_slice
from ..registry import check_config, register_layer
from .base import Layer, built_like, check_flag, check_seed
from .dense import _positive_int, check_init, check_params

#: Bytes the column matrix of one Conv2D call may take before the batch is split in chunks.
COLUMN_BUDGET = 32 * 2**20


# -- helpers shared with pooling ----------------------------------------------------------
def pair(where: str, name: str, value, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; anything else is a ValueError naming ``name``."""
    vals = value if isinstance(value, (tuple, list)) else (value, value)
    if len(vals) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in vals):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(
            f"{where}: expected {name} to be a {kind} integer or a pair of them, received {name}={value!r}"
        )
    return int(vals[0]), int(vals[1])


def check_window(where: str, kernel, stride, padding, dilation=(1, 1)) -> None:
    """Refuse a window no image within ``limits.MAX_IMAGE_PIXELS`` could use: a (dilated) kernel
    or a padded border larger than such an image, or a larger stride (the values may come from
    a model file, and padding is allocated per input)."""
    ext = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    for name, (a, b) in (("kernel_size (dilated)", ext), ("stride", stride), ("padding", [2 * p + 1 for p in padding])):
        check_size(f"{where}: {name} area", a * b, MAX_IMAGE_PIXELS, "VECNN_MAX_IMAGE_PIXELS")


def plain(p: tuple[int, int]):
    """A pair as JSON-friendly config: ``3`` when both entries agree, else ``[3, 5]``."""
    return p[0] if p[0] == p[1] else [p[0], p[1]]


def out_size(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Output length along one axis (PyTorch's floor formula); < 1 when the kernel does not fit."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def check_image(layer, x, channels: int | None) -> None:
    """Refuse anything but an ``(n, C, H, W)`` batch with the layer's channel count."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4 or (channels is not None and shape[1] != channels):
        want = f"(n, {channels if channels is not None else 'C'}, H, W)"
        got = fmt_shape(shape) if shape is not None else type(x).__name__
        raise ValueError(f"{layer!r}: expected input of shape {want}, received {got}")


def check_fits(layer, x, kernel, stride, padding, dilation=(1, 1)) -> tuple[int, int]:
    """Output size ``(Ho, Wo)``, or a ValueError when the (dilated) kernel does not fit."""
    H, W = x.shape[2:]
    Ho = out_size(H, kernel[0], stride[0], padding[0], dilation[0])
    Wo = out_size(W, kernel[1], stride[1], padding[1], dilation[1])
    if Ho < 1 or Wo < 1:
        ek = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(
            f"{layer!r}: input of shape {fmt_shape(x.shape)} has spatial size {H}x{W} "
            f"(padded: {H + 2 * padding[0]}x{W + 2 * padding[1]}), smaller than the "
            f"{'dilated ' if dilation != (1, 1) else ''}kernel {ek[0]}x{ek[1]}; expected "
            f"H >= {ek[0] - 2 * padding[0]} and W >= {ek[1] - 2 * padding[1]}"
        )
    return Ho, Wo


def channels_last(x):
    """``(N, C, H, W) -> (N, H, W, C)`` as a view (contiguous when x came out of a Conv2D)."""
    return x.transpose(0, 2, 3, 1)


def chunk_size(n: int, bytes_per_sample: int, budget: int) -> int:
    """Samples per chunk so that one chunk's temporary stays within ``budget`` bytes."""
    return max(1, min(n, budget // max(1, bytes_per_sample)))


@register_layer
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch) over NCHW images.

    Input shape ``(n, in_channels, H, W)``; output ``(n, out_channels, Ho, Wo)`` with
    ``Ho = floor((H + 2*padding - dilation*(kh-1) - 1) / stride) + 1`` (likewise ``Wo``).
    ``W`` has shape ``(out_channels, in_channels, kh, kw)`` and ``b`` shape ``(out_channels,)``,
    so weights move to and from PyTorch unchanged.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "valid" or "same" (zeros; "same" needs stride 1)
    bias : bool, default True
    init : {"he", "xavier", "lecun"}, default "he"
    seed : int, default 0
        Seed of the initial weights when the layer is used on its own.

    Attributes
    ----------
    col_budget : int or None
        Byte budget of the column matrix for this layer (None: ``conv.COLUMN_BUDGET``).

    Examples
    --------
    >>> import numpy as np, vecnn as vn
    >>> conv = vn.layers.Conv2D(3, 8, 3, padding=1)
    >>> conv.forward(np.zeros((2, 3, 32, 32), np.float32)).shape
    (2, 8, 32, 32)
    """

    batch_independent = True

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, init="he", seed=0
    ):
        super().__init__()
        (
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.bias,
            self.init,
        ) = self._check_args(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, init, seed)
        self.seed = seed
        self.col_budget = None
        self.input_spec = (self.in_channels, None, None)
        self._alloc("W", (self.out_channels, self.in_channels, *self.kernel_size))
        if self.bias:
            self._alloc("b", (self.out_channels,))
        self.init_params(np.random.default_rng(seed))

    @staticmethod
    def _check_args(
        in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, init="he", seed=0
    ):
        """The checked ``(in_channels, out_channels, kernel_size, stride, padding, dilation,
        bias, init)``, sizes as pairs; allocates nothing."""
        where = f"Conv2D({in_channels!r}, {out_channels!r}, {kernel_size!r})"
        cin = _positive_int(where, "in_channels", in_channels)
        cout = _positive_int(where, "out_channels", out_channels)
        kernel = pair(where, "kernel_size", kernel_size)
        strides = pair(where, "stride", stride)
        dil = pair(where, "dilation", dilation)
        if isinstance(padding, str) and padding == "valid":
            padding = 0
        elif isinstance(padding, str) and padding == "same":
            if strides != (1, 1):
                raise ValueError(f"{where}: padding='same' needs stride 1, received stride={stride!r}")
            total = [d * (k - 1) for k, d in zip(kernel, dil)]
            if any(t % 2 for t in total):
                raise ValueError(
                    f"{where}: padding='same' needs an odd (dilated) kernel size, "
                    f"received kernel_size={kernel_size!r}, dilation={dilation!r}"
                )
            padding = [t // 2 for t in total]
        pad = pair(where, "padding", padding, minimum=0)
        check_window(where, kernel, strides, pad, dil)
        bias = check_flag(where, "bias", bias)
        check_params(where, [(cout, cin, *kernel), (cout,) if bias else (0,)])
        check_seed(where, seed)
        return cin, cout, kernel, strides, pad, dil, bias, check_init(where, init)

    @classmethod
    def param_shapes(cls, config):
        if not built_like(cls, Conv2D):
            return super().param_shapes(config)
        cin, cout, kernel, *_, bias, _ = cls._check_args(**check_config(cls, config))
        return {"W": (cout, cin, *kernel), **({"b": (cout,)} if bias else {})}, {}

    def init_params(self, rng):
        init.get(self.init)(self.params["W"], rng, "conv")
        if self.bias:
            self.params["b"][...] = 0

    # -- buffers ---------------------------------------------------------------------------
    def _scratch(self, backend, name, shape, dtype, ones=None):
        """A per-layer scratch array kept across calls (a prefix of the largest one so far, so a
        smaller last batch allocates nothing). ``ones="col"`` / ``"row"`` fills the last column /
        row with ones whenever the shape changes (the bias lane)."""
        size = math.prod(shape)
        bufs, filled = self.__dict__.setdefault("_colbufs", {}), self.__dict__.setdefault("_ones", {})
        buf = bufs.get(name)
        if buf is None or type(buf) is not backend.ndarray or buf.size < size or buf.dtype != dtype:
            buf = bufs[name] = backend.empty(size, dtype)
            filled.pop(name, None)
        view = buf[:size].reshape(shape)
        if ones is not None and filled.get(name) != (shape, ones):
            if ones == "col":
                view[:, -1] = 1
            else:
                view[-1] = 1
            filled[name] = (shape, ones)
        return view

    def _padded_nchw(self, backend, x):
        """NCHW ``x`` with a zero border of ``padding`` (``x`` itself when there is none)."""
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return x
        N, C, H, W = x.shape
        buf = self._scratch(backend, "pad", (N, C, H + 2 * ph, W + 2 * pw), x.dtype)
        buf[...] = 0
        buf[:, :, ph : ph + H, pw : pw + W] = x
        return buf

    def _columns(self, backend, start, stop):
        """im2col of samples ``start:stop``, kernel positions in ``(kh, kw, C)`` order.

        Channels-last input gives ``cols`` ``(n*Ho*Wo, K [+1])`` (rows: output pixels; the
        backend's ``im2col``); NCHW input gives its transpose ``(K [+1], n*Ho*Wo)``, whose rows
        are whole-image copies (the fast layout for a first layer of one or three channels)."""
        x, (Ho, Wo), C = self._x_in, self._out_hw, self.in_channels
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        n, K = stop - start, kh * kw * C
        if self._rows_layout:
            xs = channels_last(x[start:stop])  # (n, H, W, C)
            if K == C and not self.bias and self.padding == (0, 0) and self.stride == (1, 1) and xs.flags.c_contiguous:
                return xs.reshape(n * Ho * Wo, K)  # 1x1 kernel on contiguous input: no copy
            buf = self._scratch(backend, "cols", (n * Ho * Wo, K + self.bias), x.dtype, "col" if self.bias else None)
            return backend.im2col(xs, self.kernel_size, self.stride, self.padding, self.dilation, buf, self)
        buf = self._scratch(backend, "cols", (K + self.bias, n * Ho * Wo), x.dtype, "row" if self.bias else None)
        blocks = buf[:K].reshape(kh, kw, C, n, Ho, Wo)  # a view: buf is contiguous
        xt = self._padded_nchw(backend, x[start:stop]).transpose(1, 0, 2, 3)  # (C, n, Hp, Wp)
        for p in range(kh):
            for q in range(kw):
                blocks[p, q] = xt[:, :, offset_slice(p, dh, sh, Ho), offset_slice(q, dw, sw, Wo)]
        return buf

    def _budget(self):
        return COLUMN_BUDGET if self.col_budget is None else self.col_budget

    def _weight_matrix(self):
        """``W`` as ``(O, kh*kw*C [+1])`` in the columns' order, the bias as the last column."""
        W = self.params["W"]
        O = self.out_channels
        K = W[0].size
        Wm = ops.get(W).empty((O, K + self.bias), W.dtype)
        Wm[:, :K] = W.transpose(0, 2, 3, 1).reshape(O, K)  # (O, kh, kw, C) order, a small copy
        if self.bias:
            Wm[:, -1] = self.params["b"]
        return Wm

    def _chunks(self, N, bytes_per_sample):
        """``(start, stop)`` sample ranges within the budget, of near-equal sizes."""
        step = chunk_size(N, bytes_per_sample, self._budget())
        step = -(-N // -(-N // step))  # as many chunks, evened out
        return [(s, min(N, s + step)) for s in range(0, N, step)]

    # -- the computation -------------------------------------------------------------------
    def forward(self, x, training=False):
        check_image(self, x, self.in_channels)
        Ho, Wo = check_fits(self, x, self.kernel_size, self.stride, self.padding, self.dilation)
        backend = ops.get(x)
        dtype = self.params["W"].dtype
        x = x.astype(dtype, copy=False)
        N, L, O = x.shape[0], Ho * Wo, self.out_channels
        self._rows_layout = x.strides[1] < x.strides[3] and self.in_channels > 1  # channels-last memory
        self._x_in, self._x_shape, self._out_hw = x, x.shape, (Ho, Wo)
        Wm = self._weight_matrix()  # (O, K [+1])
        Y = backend.scratch(self, "Y", (N * L, O), dtype)  # rows (n, i, j): channels-last output
        chunks = self._chunks(N, L * Wm.shape[1] * Y.itemsize)
        for s, e in chunks:
            cols = self._columns(backend, s, e)
            A = cols if self._rows_layout else cols.T  # (rows, K+1)
            backend.xp.matmul(A, Wm.T, out=Y[s * L : e * L])  # @ (K+1, O)
        self._cols = cols if len(chunks) == 1 else None  # kept for dW unless chunked
        return Y.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)  # NCHW view, (N, Ho, Wo, O) memory

    def backward(self, grad_y):
        N, C, H, W = self._x_shape
        (Ho, Wo), O = self._out_hw, self.out_channels
        L = Ho * Wo
        backend = ops.get(grad_y)
        xp = backend.xp
        dY = xp.ascontiguousarray(channels_last(grad_y)).reshape(N * L, O)  # free after a Conv2D
        dtype = self.params["W"].dtype
        K = self.kernel_size[0] * self.kernel_size[1] * C
        dWt = backend.empty((K + self.bias, O), dtype)  # [dW | db]^T: the ones lane gives db
        chunks = self._chunks(N, L * (K + self.bias) * dWt.itemsize)
        for s, e in chunks:
            cols = self._cols if self._cols is not None else self._columns(backend, s, e)
            dYc = dY[s * L : e * L]  # (rows, O)
            if self._rows_layout:  # (K+1, rows) @ (rows, O): the faster
                part = xp.matmul(cols.T, dYc, out=dWt if s == 0 else None)  # orientation here
            else:  # thin first layer: one small GEMM per sample,
                n = e - s  # summed (OpenBLAS is slow on one long K)
                part = xp.matmul(cols.reshape(-1, n, L).transpose(1, 0, 2), dYc.reshape(n, L, O)).sum(axis=0)
                if s == 0:
                    dWt[...] = part
            if s > 0:
                dWt += part
        self.grads["W"][...] = dWt[:K].T.reshape(O, *self.kernel_size, C).transpose(0, 3, 1, 2)
        if self.bias:
            self.grads["b"][...] = dWt[K]
        if not self.input_grad:
            return None
        return self._input_grad(backend, dY)

    def _input_grad(self, backend, dY):
        """col2im: ``dcols = dY @ Wm`` (one GEMM per chunk), then the backend's ``col2im`` adds
        each column entry back into the input pixel it was read from. The result is NCHW,
        channels-last in memory."""
        N, C, H, W = self._x_shape
        L = self._out_hw[0] * self._out_hw[1]
        K = self.kernel_size[0] * self.kernel_size[1] * C
        Wm = self._weight_matrix()[:, :K]  # (O, K)
        dX = backend.scratch(self, "dX", (N, H, W, C), Wm.dtype, zero=True)
        for s, e in self._chunks(N, L * K * Wm.itemsize):
            dcols = backend.xp.matmul(
                dY[s * L : e * L], Wm, out=self._scratch(backend, "dcols", ((e - s) * L, K), Wm.dtype)
            )
            backend.col2im(dcols, self.kernel_size, self.stride, self.padding, self.dilation, dX[s:e], self)
        return dX.transpose(0, 3, 1, 2)

    # -- configuration ---------------------------------------------------------------------
    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": plain(self.kernel_size),
            "stride": plain(self.stride),
            "padding": plain(self.padding),
            "dilation": plain(self.dilation),
            "bias": self.bias,
            "init": self.init,
        }

    def output_shape(self, input_shape):
        C, H, W = input_shape
        return (
            self.out_channels,
            out_size(H, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]),
            out_size(W, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1]),
        )

    def flops(self, input_shape):
        _, Ho, Wo = self.output_shape(input_shape)
        kh, kw = self.kernel_size
        return 2 * Ho * Wo * self.out_channels * self.in_channels * kh * kw

    def drop_scratch(self):
        super().drop_scratch()
        for key in ("_colbufs", "_ones"):
            self.__dict__.pop(key, None)
