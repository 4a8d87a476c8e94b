"""The inputs of ``vecnn predict``: array files and images, stacked into one float32 batch.

``read_inputs(paths, input_shape, invert)`` returns ``(X, names)``: ``X`` float32
``(n, *input_shape)``, ``names`` one label per sample (``file.png``, ``file.npy[3]``).

* ``.npy`` / ``.npz``: read by the same careful reader as training data
  (:func:`vecnn.data.user.read_npy`: header checked before anything is allocated, numeric
  dtypes only, never unpickled). From an ``.npz``, the array under the first of
  ``x``/``X``/``images``/``data``/``features``/``inputs`` present, else its first array. An
  array shaped exactly like the model's input is one sample; any other must be a batch
  ``(n, *input_shape)``. Values are used as they are (no scaling, ``invert`` not applied).
* Any other file is read as an image by Pillow (its first frame, EXIF orientation applied) and
  scaled to [0, 1] by the image's real range: 8-bit images by 255, 16-bit ones (modes
  ``I;16*``, and ``I`` from 16-bit PNG/PGM) by 65535, 32-bit integer TIFFs by the range of
  their dtype (int32 or uint32), float TIFFs (mode ``F``) as given when within [0, 1], else by
  their own minimum and maximum. Transparent pixels are composited over white (as most viewers
  show them; ``invert`` then makes them black). Colour becomes grey by ITU-R 601 luma, grey
  becomes colour by repetition, to the model's 1 or 3 channels; the image is then resized
  (bilinear, in float, so an 8-bit and a 16-bit copy of one image give the same input) to the
  model's height and width. ``invert`` gives ``1 - x``.

Bounds (``vecnn.limits``): an image's pixel count is read from its header and checked against
``MAX_IMAGE_PIXELS`` before it is decoded (Pillow's own decompression-bomb refusal is a
``ValueError`` too); the model's ``input_shape`` and the whole batch against ``MAX_ELEMENTS``.
Every problem is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..backend import DTYPE
from ..limits import MAX_ELEMENTS, MAX_IMAGE_PIXELS, check_shape, check_size
from .user import X_KEYS, NpzArchive, _check_is_file, _detail, read_npy, to_float32

_ARRAY_SUFFIXES = (".npy", ".npz")
#: Pillow modes holding more than 8 bits per sample (each a single channel)
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
#: ITU-R 601-2 luma, as Pillow's own RGB -> L conversion
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def read_inputs(paths, input_shape=None, invert: bool = False):
    """Read ``paths`` (array files and images) as one batch for a model taking
    ``input_shape`` (per sample; ``None`` when unknown: arrays are then taken as batches as
    they are, and images refused). Returns ``(X, names)``; see the module docstring."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no input files given")
    shape = _model_shape(input_shape)
    n_images = sum(p.suffix.lower() not in _ARRAY_SUFFIXES for p in paths)
    if n_images:
        _check_image_shape(shape, next(p for p in paths if p.suffix.lower() not in _ARRAY_SUFFIXES))
        check_shape(f"{n_images} image(s) at the model's input shape {shape}", (n_images, *shape))
    batches: list = []
    names: list = []
    total = 0
    for p in paths:
        _check_is_file(p)
        if p.suffix.lower() in _ARRAY_SUFFIXES:
            a = _read_array(p, shape)
            names += [f"{p.name}[{i}]" for i in range(len(a))]
        else:
            a = _read_image(p, shape, invert)[None]
            names.append(p.name)
        if batches and a.shape[1:] != batches[0].shape[1:]:
            raise ValueError(
                f"{p}: samples of shape {a.shape[1:]} cannot go in one batch with "
                f"those of {paths[0]}, shape {batches[0].shape[1:]}"
            )
        total += a.size
        check_size("the inputs together: elements", total, MAX_ELEMENTS, "VECNN_MAX_ELEMENTS")
        batches.append(a)
    return (batches[0] if len(batches) == 1 else np.concatenate(batches)), names


def _model_shape(input_shape):
    """The model's per-sample input shape as a tuple of positive ints (or ``None``)."""
    if input_shape is None:
        return None
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise ValueError(f"the model's input_shape: expected a list of sizes, found {input_shape!r}")
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in input_shape):
        raise ValueError(f"the model's input_shape: expected integer sizes, found {list(input_shape)!r}")
    shape = check_shape("the model's input_shape", input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"the model's input_shape: expected positive sizes, found {shape}")
    return shape


def _check_image_shape(shape, p):
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{p}: is read as an image, but the model does not take images (its input "
            f"shape is {shape}); pass the inputs as an .npy array"
        )
    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(
            f"{p}: the model takes {c}-channel images; images are read as 1 (grey) "
            f"or 3 (RGB) channels: pass the inputs as an .npy array of shape (n, {c}, {h}, {w})"
        )
    check_size(f"the model's input_shape {shape}: pixels per image", h * w, MAX_IMAGE_PIXELS, "VECNN_MAX_IMAGE_PIXELS")


# -- arrays ------------------------------------------------------------------------------------
def _read_array(p: Path, shape) -> np.ndarray:
    if p.suffix.lower() == ".npy":
        a, where = read_npy(p), str(p)
    else:
        with NpzArchive(p) as z:
            if not z.keys:
                raise ValueError(f"{p}: the .npz archive is empty (it holds no arrays)")
            key = next((k for k in X_KEYS if k in z.keys), z.keys[0])
            a, where = z.read(key), f"{p} (array {key!r})"
    if shape is not None:
        if a.shape == shape:
            a = a[None]  # one sample
        elif a.shape[1:] != shape:
            batch = "(n, " + ", ".join(map(str, shape)) + ")"
            raise ValueError(
                f"{where}: shape {a.shape} does not fit the model, which takes one "
                f"sample of shape {shape} or a batch {batch}"
            )
    elif a.ndim < 2:
        raise ValueError(f"{where}: expected a batch of samples, shape (n, ...), found shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{where}: holds no samples (shape {a.shape})")
    return to_float32(a, where)


# -- images ------------------------------------------------------------------------------------
def _read_image(p: Path, shape, invert: bool) -> np.ndarray:
    """One image as float32 ``(c, h, w)`` in [0, 1]."""
    from PIL import Image

    c, h, w = shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on odd files: not for the user's screen
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(p)
        except Exception as e:  # anything the decoder raises is the file's doing
            raise _image_error(p, e) from None
        with img:
            W, H = img.size  # from the header: nothing decoded yet
            check_size(f"{p}: an image of {W}x{H} pixels", W * H, MAX_IMAGE_PIXELS, "VECNN_MAX_IMAGE_PIXELS")
            try:
                a, kind = _decode(img)
            except Exception as e:
                raise _image_error(p, e) from None
    a = _to_unit(a, kind, p)  # (H, W, 1 or 3) float32 in [0, 1]
    if a.shape[-1] != c:
        a = a @ _LUMA[:, None] if c == 1 else np.repeat(a, 3, axis=-1)
    if a.shape[:2] != (h, w):
        from PIL import Image

        a = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(a[..., k])).resize((w, h), Image.Resampling.BILINEAR),
                    dtype=DTYPE,
                )
                for k in range(c)
            ],
            axis=-1,
        )
        np.clip(a, 0, 1, out=a)
    a = np.moveaxis(a, -1, 0)  # (c, h, w)
    return np.ascontiguousarray(1 - a if invert else a, dtype=DTYPE)


def _image_error(p: Path, e: Exception) -> ValueError:
    from PIL import Image

    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ValueError(f"{p}: refused as a possible decompression bomb ({_detail(e)})")
    return ValueError(f"{p}: cannot read it as an image ({_detail(e)})")


def _decode(img):
    """Pixels of ``img``'s first frame as an array, and what its values mean: ``"u8"`` (8-bit,
    grey ``(H, W)``, RGB or RGBA ``(H, W, 3|4)``), ``"u16"`` (0..65535), ``"i32"``/``"u32"``
    (32-bit integers), ``"f"`` (float)."""
    from PIL import ImageOps

    bits, sample_format = _tiff_sample(img)  # before the transpose copies img
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _WIDE_MODES:
        a = np.asarray(img)
        if mode == "F":
            return a.astype(np.float32), "f"
        if mode != "I":
            return a, "u16" if a.dtype.kind == "u" else "i16"
        if bits == 32:  # a 32-bit integer TIFF
            return (a.view(np.uint32), "u32") if sample_format == 1 else (a, "i32")
        return a, "u16"  # 16-bit PNG/PGM/TIFF data opened as I
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return np.asarray(img.convert("RGBA")), "u8"
    if mode in ("1", "L"):
        return np.asarray(img.convert("L")), "u8"
    return np.asarray(img.convert("RGB")), "u8"


def _tiff_sample(img):
    """A TIFF's bits per sample and sample format (1 unsigned, 2 signed, 3 float), else Nones."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return None, None

    def first(v):
        return v[0] if isinstance(v, tuple) and v else v

    return first(tags.get(258)), first(tags.get(339))


def _to_unit(a: np.ndarray, kind: str, p: Path) -> np.ndarray:
    """Pixel values as float32 ``(H, W, 1 or 3)`` in [0, 1], scaled by the image's real range."""
    if kind == "u8":
        x = a.astype(DTYPE) / DTYPE(255)
        if x.ndim == 3 and x.shape[-1] == 4:  # composite over white
            alpha = x[..., 3:]
            x = x[..., :3] * alpha + (1 - alpha)
    elif kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{p}: the float image holds NaN or Inf pixels")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1:
            x = a.astype(DTYPE)
        elif hi > lo:
            x = ((a.astype(np.float64) - lo) / (hi - lo)).astype(DTYPE)
        else:  # constant, outside [0, 1]
            x = np.clip(a, 0, 1).astype(DTYPE)
    else:
        lo, span = {"u16": (0, 65535), "i16": (-32768, 65535), "u32": (0, 2**32 - 1), "i32": (-(2**31), 2**32 - 1)}[
            kind
        ]
        x = ((a.astype(np.float64) - lo) / span).astype(DTYPE)
    x = np.clip(x, 0, 1)
    return x[..., None] if x.ndim == 2 else x
