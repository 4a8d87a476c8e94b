"""Fused optimizer kernels, compiled with numba when it is installed.

An optimizer step written as NumPy whole-buffer operations makes one pass over memory per
operation (Adam: about eight, plus a copy for the undo buffer and a pass for the finiteness
check); each kernel here makes one pass in total. Each kernel also stores the previous
parameters in ``old`` (so a diverged step can be undone) and returns ``sum(new_p * 0)``,
which is 0 exactly when every new parameter is finite (``inf * 0`` and ``nan * 0`` are NaN).

The NumPy versions in ``vecnn.optim`` stay the readable reference and the fallback: set
``vecnn.kernels.enabled = False`` (the tests run both) or uninstall numba to use them.
All arithmetic is float32, with float32 constants, so nothing is silently widened.
"""
from __future__ import annotations

enabled = True


class Lazy:
    """Kernels compiled on first use by ``compile_fn`` (numba's ``njit`` with an on-disk cache),
    shared by every module of compiled kernels so that one switch, ``vecnn.kernels.enabled``,
    selects them or the NumPy paths."""

    def __init__(self, compile_fn):
        self._compile_fn = compile_fn
        self._compiled = None
        self._failed = False

    def get(self):
        """The compiled kernels, or None (numba missing or disabled, or it failed to compile)."""
        if not enabled or self._failed:
            return None
        if self._compiled is None:
            try:
                self._compiled = self._compile_fn()
            except Exception:        # no numba, or it cannot compile here: the NumPy paths remain
                self._failed = True
                return None
        return self._compiled

    def compiled(self):
        """The kernels compiled so far (for a backward pass whose forward used them, whatever
        the switch says meanwhile), or None."""
        return self._compiled


def _compile():
    import numpy as np
    from numba import njit

    # Serial on purpose: a second thread pool beside OpenBLAS's spinning workers costs more
    # than it gains on a 2-core machine. 'reassoc' lets LLVM vectorize the finiteness sum.
    opts = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    zero = np.float32(0)
    # Momentum-like state decays geometrically where a weight gets no gradient (the weights of
    # always-zero pixels, dead units) and sinks into the subnormal range within a few hundred
    # steps, where x86 arithmetic is ~100x slower. The kernels flush such state to zero; the
    # values it drops are below 1.2e-38.
    tiny = np.float32(1.1754944e-38)

    @njit(**opts)
    def adam(p, g, m, v, old, b1, c1, b2, c2, eps, step_size, inv_sqrt_bc2, l2, decay):
        # g += l2 p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
        # p = p decay - step m / (sqrt(v)/sqrt(bc2) + eps)
        chk = zero
        for i in range(p.shape[0]):
            pi = p[i]
            old[i] = pi
            gi = g[i] + l2 * pi
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            mi = mi if abs(mi) >= tiny else zero
            vi = vi if vi >= tiny else zero
            m[i] = mi
            v[i] = vi
            pn = pi * decay - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps)
            p[i] = pn
            chk += pn * zero
        return chk

    @njit(**opts)
    def sgd(p, g, buf, old, lr, mu, l2, nesterov, first):
        chk = zero
        for i in range(p.shape[0]):
            pi = p[i]
            old[i] = pi
            gi = g[i] + l2 * pi
            if mu != zero:
                b = gi if first else mu * buf[i] + gi
                b = b if abs(b) >= tiny else zero
                buf[i] = b
                gi = gi + mu * b if nesterov else b
            pn = pi - lr * gi
            p[i] = pn
            chk += pn * zero
        return chk

    @njit(**opts)
    def rmsprop(p, g, s, old, lr, alpha, c, eps, l2):
        chk = zero
        for i in range(p.shape[0]):
            pi = p[i]
            old[i] = pi
            gi = g[i] + l2 * pi
            si = alpha * s[i] + c * gi * gi
            si = si if si >= tiny else zero
            s[i] = si
            pn = pi - lr * gi / (np.sqrt(si) + eps)
            p[i] = pn
            chk += pn * zero
        return chk

    @njit(cache=True, nogil=True, error_model="numpy")
    def softmax_cross_entropy(z, y, eps, grad):
        # one pass per row: log-sum-exp, the smoothed negative log-likelihood, the argmax
        # (for accuracy) and the gradient (softmax - target) / n, written into grad
        n, C = z.shape
        total = 0.0
        correct = 0
        inv_n = np.float32(1.0 / n)
        off = np.float32(eps / C)
        keep = np.float32(1.0 - eps)
        for i in range(n):
            mx = z[i, 0]
            am = 0
            for c in range(1, C):
                if z[i, c] > mx:
                    mx = z[i, c]
                    am = c
            s = np.float32(0)
            shift_sum = np.float32(0)
            for c in range(C):
                e = np.exp(z[i, c] - mx)
                grad[i, c] = e
                s += e
                shift_sum += z[i, c] - mx
            lse = np.log(s)
            yi = y[i]
            nll = lse - (z[i, yi] - mx)
            if eps != 0:
                nll = keep * nll + np.float32(eps) * (lse - shift_sum / C)
            total += nll
            correct += am == yi
            inv_s = np.float32(1) / s
            for c in range(C):
                grad[i, c] = (grad[i, c] * inv_s - off) * inv_n
            grad[i, yi] -= keep * inv_n
        return total / n, correct

    @njit(**opts)
    def relu_forward(x, y):
        # y = max(x, 0) in one pass; backward reads the mask back from y (y > 0 iff x > 0)
        for i in range(x.shape[0]):
            xi = x[i]
            y[i] = xi if xi > zero else zero

    @njit(**opts)
    def relu_backward(y, g, dx):
        for i in range(y.shape[0]):
            dx[i] = g[i] if y[i] > zero else zero

    @njit(**opts)
    def bias_relu(z, b):
        # z = max(z + b, 0) in place, z (n, out) in C order: a Dense layer's bias and the ReLU
        # after it in one pass over the product
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                t = z[i, j] + b[j]
                z[i, j] = t if t > zero else zero

    @njit(**opts)
    def column_sums(g, out):
        # out = g.sum(axis=0), row by row like NumPy, without its reduction machinery
        for j in range(out.shape[0]):
            out[j] = zero
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                out[j] += g[i, j]

    @njit(**opts)
    def relu_backward_bias(y, g, dz, db):
        # dz = g * (y > 0) and db = its column sums, one pass (row by row, the order of
        # NumPy's sum over axis 0)
        for j in range(db.shape[0]):
            db[j] = zero
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                t = g[i, j] if y[i, j] > zero else zero
                dz[i, j] = t
                db[j] += t

    @njit(**opts)
    def finite_check(x):
        # sum(x * 0): 0 exactly when every value is finite (inf * 0 and nan * 0 are NaN)
        acc = zero
        for i in range(x.shape[0]):
            acc += x[i] * zero
        return acc

    @njit(**opts)
    def bn_stats(x, mean, var):
        # per column of x (M, C): mean and biased variance, accumulated in float64 (one pass)
        M, C = x.shape
        s = np.zeros(C, np.float64)
        ss = np.zeros(C, np.float64)
        for i in range(M):
            for c in range(C):
                v = np.float64(x[i, c])
                s[c] += v
                ss[c] += v * v
        for c in range(C):
            mu = s[c] / M
            mean[c] = mu
            var[c] = max(ss[c] / M - mu * mu, 0.0)

    @njit(**opts)
    def bn_normalize(x, mean, inv_std, gamma, beta, xhat, y):
        # xhat = (x - mean) inv_std;  y = xhat gamma + beta, per column of x (M, C)
        M, C = x.shape
        for i in range(M):
            for c in range(C):
                h = (x[i, c] - mean[c]) * inv_std[c]
                xhat[i, c] = h
                y[i, c] = h * gamma[c] + beta[c]

    @njit(**opts)
    def bn_grad_sums(g, xhat, dgamma, dbeta):
        # dgamma = sum(g xhat), dbeta = sum(g) per column, accumulated in float64
        M, C = g.shape
        sg = np.zeros(C, np.float64)
        sgx = np.zeros(C, np.float64)
        for i in range(M):
            for c in range(C):
                gi = np.float64(g[i, c])
                sg[c] += gi
                sgx[c] += gi * xhat[i, c]
        for c in range(C):
            dbeta[c] = sg[c]
            dgamma[c] = sgx[c]

    @njit(**opts)
    def bn_input_grad(g, xhat, a, b, d, dx):
        # dx = a (g - (b + xhat d)) per column: a = gamma inv_std, b = dbeta / m, d = dgamma / m
        M, C = g.shape
        for i in range(M):
            for c in range(C):
                dx[i, c] = a[c] * (g[i, c] - (b[c] + xhat[i, c] * d[c]))

    class Kernels:
        pass

    k = Kernels()
    k.bn_stats, k.bn_normalize, k.bn_grad_sums, k.bn_input_grad = bn_stats, bn_normalize, bn_grad_sums, bn_input_grad
    k.adam, k.sgd, k.rmsprop, k.softmax_cross_entropy = adam, sgd, rmsprop, softmax_cross_entropy
    k.relu_forward, k.relu_backward, k.finite_check = relu_forward, relu_backward, finite_check
    k.bias_relu, k.relu_backward_bias, k.column_sums = bias_relu, relu_backward_bias, column_sums
    return k


_kernels = Lazy(_compile)
get = _kernels.get
