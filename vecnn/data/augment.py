"""Data augmentation for NCHW image batches, vectorized over the batch.

Every sample gets its own random shift and flip, yet there is no Python loop over samples:
a shift pads the whole batch once and takes every sample's window in one gather (an index
array built by broadcasting per-sample offsets against the pixel grid); a flip is one
``where`` over a per-sample mask.

``Augment`` bundles them for the training loop: ``fit(..., augment=Augment(shift=2))`` calls
``augment(batch, rng)`` on every training batch with the model's own generator, so a seeded
run stays reproducible (and resumable).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PAD_MODES = ("constant", "edge", "reflect")


def random_shift(x, shift, rng: np.random.Generator, mode: str = "constant"):
    """Shift each image by its own random offset in ``[-shift, shift]`` pixels on each axis,
    filling the uncovered border per ``mode`` (zeros by default). This is the "pad, then take a
    random crop of the original size" augmentation.

    Parameters
    ----------
    x : array ``(N, C, H, W)``
    shift : int or (int, int)
        Largest shift in rows and in columns; smaller than the image's height and width.
    rng : numpy.random.Generator
    mode : "constant" (zeros), "edge" or "reflect"

    Returns
    -------
    array ``(N, C, H, W)``, same dtype; ``x`` is not modified.
    """
    n, c, h, w = _check_images("random_shift", x)
    sy, sx = _pair("random_shift", "shift", shift)
    if sy == 0 and sx == 0:
        return x
    if mode not in PAD_MODES:
        raise ValueError(f"random_shift: mode must be one of {PAD_MODES}, received {mode!r}")
    _check_shift("random_shift", (sy, sx), h, w)
    pad_mode: Any = mode  # one of PAD_MODES (checked above); NumPy's stubs want a literal
    xp = np.pad(x, ((0, 0), (0, 0), (sy, sy), (sx, sx)), mode=pad_mode)  # (N, C, H+2sy, W+2sx)
    wp = w + 2 * sx
    dy = rng.integers(0, 2 * sy + 1, size=n)  # (N,) window top
    dx = rng.integers(0, 2 * sx + 1, size=n)  # (N,) window left
    rows = dy[:, None, None] + np.arange(h)[None, :, None]  # (N, H, 1)
    cols = dx[:, None, None] + np.arange(w)[None, None, :]  # (N, 1, W)
    idx = (rows * wp + cols).reshape(n, 1, h * w)  # (N, 1, H*W) flat offsets
    flat = xp.reshape(n, c, -1)  # (N, C, Hp*Wp)
    return np.take_along_axis(flat, idx, axis=2).reshape(n, c, h, w)  # one gather, all samples


def random_flip(x, rng: np.random.Generator, p: float = 0.5):
    """Mirror each image left-right with probability ``p`` (one mask, one ``where``).

    Input and output shape ``(N, C, H, W)``; ``x`` is not modified.
    """
    n = _check_images("random_flip", x)[0]
    if not 0 <= p <= 1:
        raise ValueError(f"random_flip: expected 0 <= p <= 1, received p={p!r}")
    flip = rng.random(n) < p  # (N,)
    return np.where(flip[:, None, None, None], x[..., ::-1], x)


class Augment:
    """Random shifts (pad and crop) and horizontal flips for training batches.

    Parameters
    ----------
    shift : int or (int, int)
        Largest random shift in pixels (rows, columns); 0 for none.
    flip : bool
        Mirror half of the images left-right (for data where that keeps the class, e.g.
        clothes; not digits).
    mode : "constant" (zeros), "edge" or "reflect"
        How the border a shift uncovers is filled.
    seed : int
        Seeds the generator used when ``__call__`` gets none.

    Examples
    --------
    >>> import numpy as np
    >>> aug = Augment(shift=2, flip=True, seed=0)
    >>> aug(np.zeros((4, 1, 8, 8), np.float32)).shape
    (4, 1, 8, 8)
    """

    def __init__(self, shift=0, flip: bool = False, mode: str = "constant", seed: int = 0):
        self.shift = _pair("Augment", "shift", shift)
        if mode not in PAD_MODES:
            raise ValueError(f"Augment: mode must be one of {PAD_MODES}, received {mode!r}")
        self.flip = bool(flip)
        self.mode = mode
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __call__(self, xb, rng: np.random.Generator | None = None):
        """Augment batch ``xb`` ``(N, C, H, W)`` with ``rng`` (default: this object's own)."""
        rng = self.rng if rng is None else rng
        if self.shift != (0, 0):
            xb = random_shift(xb, self.shift, rng, self.mode)
        if self.flip:
            xb = random_flip(xb, rng)
        return xb

    def check_input(self, sample_shape):
        """Refuse samples this augmentation cannot work on, before training starts: they must
        be images ``(C, H, W)``, and a shift must be smaller than the image (the limit is named)."""
        shape = tuple(sample_shape)
        if len(shape) != 3:
            raise ValueError(f"augmentation needs image samples (C, H, W), received samples of shape {shape}")
        _check_shift("augment", self.shift, shape[1], shape[2])

    def config(self) -> dict:
        return {"shift": list(self.shift), "flip": self.flip, "mode": self.mode, "seed": self.seed}

    def spec(self) -> str:
        """The spec string ``from_spec`` reads back."""
        parts = []
        if self.shift != (0, 0):
            sy, sx = self.shift
            parts.append(f"shift:{sy}" if sy == sx else f"shift:{sy}:{sx}")
        if self.flip:
            parts.append("flip")
        if self.mode != "constant":
            parts.append(f"mode:{self.mode}")
        return ",".join(parts)

    @classmethod
    def from_spec(cls, spec: str, seed: int = 0) -> "Augment":
        """Parse ``"shift:2"``, ``"shift:2:3,flip"``, ``"crop:4,mode:reflect"`` (``crop:K`` is
        ``shift:K``: pad by K, take a random crop of the original size)."""
        kwargs: dict = {}
        for token in (t.strip() for t in str(spec).split(",")):
            name, *args = token.split(":")
            key = {"crop": "shift", "hflip": "flip"}.get(name, name)
            if key in kwargs:
                raise ValueError(
                    f"augment spec {spec!r}: {token!r} says again what an earlier token said ({key}); give each once"
                )
            try:
                if name in ("shift", "crop") and 1 <= len(args) <= 2:
                    vals = [int(a) for a in args]
                    kwargs["shift"] = (vals[0], vals[-1])
                elif name in ("flip", "hflip") and not args:
                    kwargs["flip"] = True
                elif name == "mode" and len(args) == 1:
                    kwargs["mode"] = args[0]
                else:
                    raise ValueError
                cls(**kwargs)  # validates the values so far
            except ValueError as e:
                detail = f" ({e})" if str(e) else ""
                raise ValueError(
                    f"augment spec {spec!r}: bad token {token!r}{detail}; expected "
                    f"shift:K, shift:KY:KX, crop:K, flip or mode:constant|edge|reflect"
                ) from None
        return cls(**kwargs, seed=seed)

    def __repr__(self) -> str:
        return f"Augment({self.spec()!r})"


def _check_shift(where, shift, h, w):
    """A shift of at least the image size would leave nothing of the image (and pad by that
    much, sized by the flag rather than by the data): refuse it, naming the largest allowed."""
    sy, sx = shift
    if sy >= h or sx >= w:
        raise ValueError(
            f"{where}: shift ({sy}, {sx}) is too large for {h}x{w} images: at most "
            f"({h - 1}, {w - 1}), less than the image size"
        )


def _check_images(where, x):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"{where}: expected an image batch of shape (n, C, H, W), received "
            f"{'shape ' + str(tuple(shape)) if shape is not None else type(x).__name__}"
        )
    return shape


def _pair(where, name, v):
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(v, (tuple, list)) else None
    if (
        pair is None
        or len(pair) != 2
        or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in pair)
    ):
        raise ValueError(f"{where}: {name} must be a non-negative int or a pair of them, received {v!r}")
    return int(pair[0]), int(pair[1])
