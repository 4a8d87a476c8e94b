"""Model files: one safetensors file whose header metadata carries vecnn's JSON.

Layout: tensors ``layers.<i>.<param>`` and ``layers.<i>.state.<name>`` (plus any extra
tensors, e.g. optimizer state in a checkpoint, under their own prefixes); metadata key
``vecnn`` holds JSON with the format version, the architecture, the loss, class names,
preprocessing statistics and a SHA-256 digest.

Format versions:

- 2 (written now): the digest covers the tensors (names, dtypes, shapes, bytes) *and* the
  whole metadata but the digest itself, in a canonical JSON serialization (sorted keys, no
  spaces), so editing ``class_names`` or a layer name is caught.
- 1 (vecnn before 2): the digest covers the tensors only. Such files still load, with that
  check; their metadata is *not* covered by the digest, only validated like any other.

Loading checks before it trusts or allocates: the path is a regular file; the header length,
then the header (at most ``_MAX_HEADER`` bytes, JSON nested at most ``_MAX_DEPTH`` deep); every
tensor entry (dtype, shape within ``limits``, offsets that tile the rest of the file exactly);
the metadata's fields (types, ranges); the digest; that float tensors are finite. Only then
are the tensors read, and a model is built only after every layer's configuration has been
checked and the parameter shapes it implies (``Layer.param_shapes``, computed without
allocating) match the tensors present. Nothing is unpickled, imported or executed; names
resolve through the registry. Anything wrong is a ``ValueError`` naming the file and the field
or tensor; an unreadable path is an ``OSError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from . import limits
from .files import atomic_write  # atomic_write: also vecnn.io's, for callers

FORMAT = "vecnn-model"
FORMAT_VERSION = 2
_DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "F16": np.float16,
    "I8": np.int8,
    "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
#: bytes of the safetensors header (tensor table and metadata); a real model's is kilobytes,
#: and parsed JSON takes several times its size in memory
_MAX_HEADER = 16 * 1024 * 1024
#: layers in an architecture, counting those inside residual blocks
_MAX_LAYERS = 10_000
#: JSON nesting allowed in the header and the metadata (a model of residual blocks nested
#: ``residual.MAX_NESTING`` deep needs about 55)
_MAX_DEPTH = 100
#: bytes of tensor data per allowed parameter (``limits.MAX_PARAMS``): weights, layer state
#: and optimizer slots, at up to 8 bytes each
_BYTES_PER_PARAM = 32
#: fields of the metadata vecnn itself reads (the rest is kept in ``model.metadata``)
_KNOWN = ("format", "format_version", "vecnn_version", "architecture", "seed", "loss", "class_names", "sha256")
#: bit generators a checkpoint's RNG state may name (never looked up by a name from a file)
_BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
    "MT19937": np.random.MT19937,
}


def _canonical(meta: dict) -> bytes:
    """The metadata as the digest sees it: everything but ``sha256``, keys sorted, no spaces."""
    return json.dumps(
        {k: v for k, v in meta.items() if k != "sha256"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=True,
    ).encode("ascii")


def _digest(tensors: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """SHA-256 of the tensors and, from format version 2 on, of ``meta`` (None: version 1,
    the tensors alone)."""
    h = hashlib.sha256()
    if meta is not None:
        m = _canonical(meta)
        h.update(b"vecnn-model/2 metadata " + str(len(m)).encode() + b"\n")
        h.update(m)
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dumps(tensors: dict[str, np.ndarray], meta: dict) -> bytes:
    """Serialize ``tensors`` and JSON ``meta`` as safetensors bytes, with the format version
    (``FORMAT_VERSION``) and the digest over both."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    # as JSON will give it back: tuples become lists, keys strings
    meta = json.loads(json.dumps({**meta, "format_version": FORMAT_VERSION}))
    meta.pop("sha256", None)
    meta["sha256"] = _digest(tensors, meta)
    return save(tensors, metadata={"vecnn": json.dumps(meta)})


# -- reading ------------------------------------------------------------------------------------
def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(v) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json(text, source: str, what: str):
    """Parse JSON ``text`` (str or bytes), refusing invalid or over-deep input with a ValueError."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(
            f"{source}: {what} nests deeper than {_MAX_DEPTH} levels; not a vecnn model file (altered?)"
        ) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, over-long integer literals
        raise ValueError(f"{source}: {what} is not valid JSON ({e}); not a vecnn model file (altered?)") from None
    todo = [(value, 1)]  # depth, without recursion
    while todo:
        v, depth = todo.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(
                f"{source}: {what} nests deeper than {_MAX_DEPTH} levels; not a vecnn model file (altered?)"
            )
        if isinstance(v, dict):
            todo += [(x, depth + 1) for x in v.values()]
        elif isinstance(v, list):
            todo += [(x, depth + 1) for x in v]
    return value


def _entries(header: dict, body_len: int, source: str) -> list[tuple]:
    """``(name, dtype, shape, start, stop)`` of every tensor, checked: a known dtype, a shape
    within ``limits.MAX_ELEMENTS``, offsets inside the data that tile it exactly."""
    entries = []
    for name, info in header.items():
        what = f"{source}: tensor {name!r}"
        if not (
            isinstance(info, dict)
            and isinstance(info.get("dtype"), str)
            and isinstance(info.get("shape"), list)
            and isinstance(info.get("data_offsets"), list)
        ):
            raise ValueError(
                f"{what} has a malformed header entry (expected dtype, shape and data_offsets), received {_short(info)}"
            )
        if info["dtype"] not in _DTYPES:
            raise ValueError(
                f"{what} has dtype {info['dtype']!r}, which vecnn does not read (known: {', '.join(_DTYPES)})"
            )
        shape, offsets = info["shape"], info["data_offsets"]
        if not all(_is_int(d) and d >= 0 for d in shape) or len(shape) > 32:
            raise ValueError(f"{what} has a malformed shape {_short(shape)} (expected non-negative integers)")
        shape = limits.check_shape(what, shape)
        if len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise ValueError(f"{what} has malformed data_offsets {_short(offsets)}")
        dtype = np.dtype(_DTYPES[info["dtype"]])
        start, stop = offsets
        if not 0 <= start <= stop <= body_len or stop - start != dtype.itemsize * math.prod(shape):
            raise ValueError(f"{what} lies outside the file or has the wrong size (truncated or altered file)")
        entries.append((name, dtype, shape, start, stop))
    end = 0
    for name, _, _, start, stop in sorted(entries, key=lambda e: (e[3], e[4])):
        if start != end:
            raise ValueError(
                f"{source}: tensor {name!r} overlaps another or leaves a gap before it (truncated or altered file)"
            )
        end = stop
    if end != body_len:
        raise ValueError(
            f"{source}: {body_len - end} bytes after the last tensor that no tensor "
            f"accounts for (truncated or altered file)"
        )
    return entries


def check_meta(meta, source: str = "<model>") -> dict:
    """Check the fields of a model file's metadata vecnn reads, by type and range (the
    architecture's configurations are checked against the tensors by ``model_from``).
    Returns ``meta``; raises ``ValueError`` naming the field."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{source}: the metadata does not name format {FORMAT!r}; not a vecnn model file")
    version = meta.get("format_version")
    if not _is_int(version):
        raise ValueError(f"{source}: format_version: expected an integer, received {_short(version)}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source}: format version {version} is newer than this vecnn reads ({FORMAT_VERSION}); upgrade vecnn"
        )
    if version < 1:
        raise ValueError(f"{source}: format_version: {version} is not a vecnn format version")
    digest = meta.get("sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError(f"{source}: sha256: expected 64 hexadecimal digits, received {_short(digest)}")
    if "vecnn_version" in meta and not isinstance(meta["vecnn_version"], str):
        raise ValueError(f"{source}: vecnn_version: expected a string, received {_short(meta['vecnn_version'])}")
    arch = meta.get("architecture")
    if not isinstance(arch, list) or not arch:
        raise ValueError(f"{source}: architecture: expected a non-empty list of layers, received {_short(arch)}")
    for i, spec in enumerate(arch):
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("config"), dict)):
            raise ValueError(
                f"{source}: architecture[{i}]: expected {{'name': ..., 'config': {{...}}}}, received {_short(spec)}"
            )
    count, todo = 0, list(arch)  # every layer spec, residual blocks' included
    while todo:
        spec = todo.pop()
        count += 1
        if count > _MAX_LAYERS:
            raise ValueError(f"{source}: architecture: more than {_MAX_LAYERS:,} layers")
        config = spec.get("config") if isinstance(spec, dict) else None
        if isinstance(config, dict):
            inner = config.get("layers")
            todo += [v for v in (inner if isinstance(inner, list) else []) if isinstance(v, dict)]
            if isinstance(config.get("projection"), dict):
                todo.append(config["projection"])
    seed = meta.get("seed")
    if not (
        seed is None
        or (_is_int(seed) and seed >= 0)
        or (isinstance(seed, list) and 0 < len(seed) <= 64 and all(_is_int(s) and s >= 0 for s in seed))
    ):
        raise ValueError(f"{source}: seed: expected a non-negative integer or null, received {_short(seed)}")
    loss = meta.get("loss")
    if not (
        loss is None
        or (isinstance(loss, dict) and isinstance(loss.get("name"), str) and isinstance(loss.get("config"), dict))
    ):
        raise ValueError(
            f"{source}: loss: expected null or {{'name': ..., 'config': {{...}}}}, received {_short(loss)}"
        )
    names = meta.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise ValueError(f"{source}: class_names: expected a list of strings, received {_short(names)}")
        limits.check_classes(f"{source}: class_names", len(names))
    shape = meta.get("input_shape")
    if shape is not None:
        if not (isinstance(shape, list) and 0 < len(shape) <= 8 and all(_is_int(d) and d >= 1 for d in shape)):
            raise ValueError(f"{source}: input_shape: expected a list of positive integers, received {_short(shape)}")
        limits.check_shape(f"{source}: input_shape", shape)
        if len(shape) == 3:
            limits.check_size(
                f"{source}: input_shape: pixels per image",
                shape[1] * shape[2],
                limits.MAX_IMAGE_PIXELS,
                "VECNN_MAX_IMAGE_PIXELS",
            )
    if "dataset" in meta and not (meta["dataset"] is None or isinstance(meta["dataset"], str)):
        raise ValueError(f"{source}: dataset: expected a name or null, received {_short(meta['dataset'])}")
    if "checkpoint" in meta:
        check_checkpoint(meta["checkpoint"], len(arch), source)
    return meta


def check_checkpoint(ck, n_layers: int | None = None, source: str = "<checkpoint>") -> dict:
    """Check the ``checkpoint`` field of a checkpoint's metadata (what ``run.load_checkpoint``
    reads): the epoch, the optimizer's name and config, RNG states (each one a state its bit
    generator accepts), the history and the run configuration. Returns ``ck``."""
    where = f"{source}: checkpoint"
    if not isinstance(ck, dict):
        raise ValueError(f"{where}: expected an object, received {_short(ck)}")
    if not (_is_int(ck.get("epoch")) and ck["epoch"] >= 0):
        raise ValueError(f"{where}: epoch: expected a non-negative integer, received {_short(ck.get('epoch'))}")
    opt = ck.get("optimizer")
    if not (isinstance(opt, dict) and isinstance(opt.get("name"), str) and isinstance(opt.get("config"), dict)):
        raise ValueError(f"{where}: optimizer: expected {{'name': ..., 'config': {{...}}}}, received {_short(opt)}")
    rng = ck.get("rng")
    if not (isinstance(rng, dict) and isinstance(rng.get("layers"), dict)):
        raise ValueError(
            f"{where}: rng: expected an object with shuffle, augment and layers states, received {_short(rng)}"
        )
    states = [("shuffle", rng.get("shuffle")), ("augment", rng.get("augment"))]
    for key, state in rng["layers"].items():
        if not (key.isdigit() and (n_layers is None or int(key) < n_layers)):
            raise ValueError(f"{where}: rng.layers: {key!r} is not the index of a layer of the model")
        states.append((f"layers.{key}", state))
    for key, state in states:
        _check_rng_state(f"{where}: rng.{key}", state)
    history = ck.get("history")
    if not (
        isinstance(history, dict)
        and all(isinstance(v, list) and all(_is_number(x) for x in v) for v in history.values())
    ):
        raise ValueError(f"{where}: history: expected an object of lists of numbers, received {_short(history)}")
    if not (ck.get("run_config") is None or isinstance(ck["run_config"], dict)):
        raise ValueError(f"{where}: run_config: expected an object or null, received {_short(ck['run_config'])}")
    return ck


def _check_rng_state(where: str, state) -> None:
    """A ``bit_generator.state`` dict that its (named, known) bit generator accepts."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        raise ValueError(f"{where}: expected a NumPy bit generator state, received {_short(state)}")
    try:
        _BIT_GENERATORS[name]().state = state
    except (TypeError, ValueError, KeyError, OverflowError, IndexError) as e:
        raise ValueError(f"{where}: not a valid {name} state ({e})") from None


def _load(size: int, read, source: str) -> tuple[dict[str, np.ndarray], dict]:
    """Parse a model file of ``size`` bytes that ``read(offset, n)`` returns pieces of: the
    header length, then the header, then (all checked) the tensors."""
    if size == 0:
        raise ValueError(f"{source}: the file is empty; not a vecnn model file")
    if size < 8:
        raise ValueError(f"{source}: only {size} bytes, too short for a vecnn model file (truncated?)")
    (n,) = struct.unpack("<Q", read(0, 8))
    if n > _MAX_HEADER:
        raise ValueError(
            f"{source}: not a vecnn model file: its first 8 bytes declare a header of {n:,} "
            f"bytes, more than a model file's header may hold ({_MAX_HEADER:,})"
        )
    if n > size - 8:
        raise ValueError(
            f"{source}: not a vecnn model file, or truncated: its header claims {n} bytes but the file holds {size}"
        )
    try:
        text = read(8, n).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{source}: not a vecnn model file (its header is not safetensors JSON)") from None
    header = _json(text, source, "its header (not safetensors JSON)")
    if not isinstance(header, dict):
        raise ValueError(f"{source}: not a vecnn model file (its header is not a JSON object)")
    extra = header.pop("__metadata__", None)
    if not (extra is None or isinstance(extra, dict)):
        raise ValueError(f"{source}: not a vecnn model file (its __metadata__ is not a JSON object)")
    raw_meta = (extra or {}).get("vecnn")
    if raw_meta is None:
        raise ValueError(f"{source}: a safetensors file without vecnn metadata; not a vecnn model file")
    if not isinstance(raw_meta, str):
        raise ValueError(f"{source}: the vecnn metadata is not a JSON string; not a vecnn model file")
    meta = _json(raw_meta, source, "the vecnn metadata")
    check_meta(meta, source)
    body_len = size - 8 - n
    entries = _entries(header, body_len, source)
    limit = _BYTES_PER_PARAM * limits.MAX_PARAMS
    if body_len > limit:
        raise ValueError(
            f"{source}: {body_len:,} bytes of tensors, more than a model within "
            f"limits.MAX_PARAMS holds ({limit:,}; set VECNN_MAX_PARAMS to raise it)"
        )
    body = read(8 + n, body_len)
    tensors = {
        name: np.frombuffer(body, dtype, math.prod(shape), start).reshape(shape).copy()
        for name, dtype, shape, start, _ in entries
    }
    del body
    if meta["format_version"] == 1:  # the old digest: tensors only, metadata not covered
        expected = _digest(tensors)
    else:
        expected = _digest(tensors, meta)
    if expected != meta["sha256"]:
        what = "the weights were" if meta["format_version"] == 1 else "the weights or the metadata were"
        raise ValueError(
            f"{source}: SHA-256 mismatch: {what} altered or corrupted after saving"
            + ("" if meta["format_version"] == 1 else " (metadata altered?)")
        )
    if meta["format_version"] == 1:
        import warnings

        warnings.warn(
            f"{source}: a format-1 model file, whose digest covers the weights but not the "
            f"metadata (architecture, class names): an edit there goes unnoticed. Load it only "
            f"if you trust where it comes from, and save it again to protect it (format 2)",
            UserWarning,
            stacklevel=3,
        )
    for name, t in tensors.items():
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            bad = int(t.size - np.count_nonzero(np.isfinite(t)))
            raise ValueError(
                f"{source}: tensor {name!r} holds {bad} non-finite value(s) (NaN or Inf); "
                f"a vecnn model never does (corrupted file, or saved from a diverged run)"
            )
    return tensors, meta


def loads(data: bytes, source: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict]:
    """Parse safetensors ``data`` written by ``dumps``; verify structure, metadata, digest and
    finiteness (see the module docstring).

    Raises ``ValueError`` saying what is wrong for empty, truncated, altered or foreign data.
    """
    view = memoryview(data).cast("B")
    return _load(len(view), lambda offset, n: bytes(view[offset : offset + n]), source)


def read_file(path) -> tuple[dict[str, np.ndarray], dict]:
    """``loads`` of the file at ``path``, read piece by piece: the header length, the header,
    then (once checked) exactly the tensor bytes it declares. A path that is missing, a
    directory or not a regular file (a FIFO, ``/dev/zero``) is a ``ValueError`` naming it; an
    unreadable one an ``OSError``."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"expected the path of a model file, received {path!r}")
    path = Path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ValueError(f"{path}: no such model file") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path}: is a directory, not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file (a device, FIFO or socket), not a model file")
    # O_NONBLOCK: should the path become a FIFO after the check, opening it cannot hang
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: not a regular file (a device, FIFO or socket), not a model file")

        def read(offset, n):
            f.seek(offset)
            data = f.read(n)
            if len(data) != n:
                raise ValueError(
                    f"{path}: the file ended {n - len(data)} bytes early while reading (truncated while being read?)"
                )
            return data

        return _load(st.st_size, read, str(path))


# -- models ---------------------------------------------------------------------------------
def model_tensors(model) -> dict[str, np.ndarray]:
    tensors = {}
    for i, layer in enumerate(model.layers):
        for k, v in layer.params.items():
            tensors[f"layers.{i}.{k}"] = v
        for k, v in layer.state.items():
            tensors[f"layers.{i}.state.{k}"] = v
    return tensors


def _host(a):
    """A NumPy copy of a device array (a model trained on the GPU saves host arrays, so its
    file loads on any machine); NumPy arrays as they are."""
    if isinstance(a, np.ndarray):
        return a
    from . import ops

    return ops.get(a).to_host(a)


def model_meta(model) -> dict:
    import vecnn

    loss = model.loss
    names = model.class_names
    if names is not None and (isinstance(names, str) or not all(isinstance(c, str) for c in names)):
        raise ValueError(
            f"class_names: expected a list of strings (a model file stores them as such), received {_short(names)}"
        )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vecnn_version": vecnn.__version__,
        "architecture": model.config(),
        "seed": model.seed,
        "loss": None if loss is None else {"name": type(loss).registered_name, "config": loss.config()},
        "class_names": None if names is None else list(names),
        **{k: v for k, v in model.metadata.items() if k not in ("format", "architecture", "loss")},
    }


def save_model(model, path, extra_tensors: dict | None = None, extra_meta: dict | None = None) -> None:
    tensors = model_tensors(model)
    tensors.update(extra_tensors or {})
    tensors = {k: _host(v) for k, v in tensors.items()}
    atomic_write(path, dumps(tensors, {**model_meta(model), **(extra_meta or {})}))


def _param_shapes(cls, config, where: str) -> tuple[dict, dict]:
    """``cls.param_shapes(config)`` with anything a user's layer class raises on a bad config
    turned into a ValueError naming ``where``."""
    try:
        params, state = cls.param_shapes(config)
        return (
            {k: tuple(int(d) for d in v) for k, v in params.items()},
            {k: tuple(int(d) for d in v) for k, v in state.items()},
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except (TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError, MemoryError) as e:
        raise ValueError(f"{where}: bad config ({type(e).__name__}: {e})") from None


def _build(cls, config, where: str):
    try:
        return cls.from_config(config)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except (TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError, MemoryError) as e:
        raise ValueError(f"{where}: bad config ({type(e).__name__}: {e})") from None


def _output_width(layers, input_shape) -> int | None:
    """The number of outputs per sample, when the layers (and ``input_shape``) determine it."""
    from .layers import Dense

    if input_shape is not None:
        shape = None
        try:
            shape = tuple(input_shape)
            for layer in layers:
                shape = tuple(layer.output_shape(shape))
        except (ValueError, TypeError, IndexError):
            return None
        return shape[0] if len(shape) == 1 else None
    last = max((i for i, l in enumerate(layers) if type(l) is Dense), default=None)
    if last is None:
        return None
    shape = (layers[last].out_features,)
    try:
        for layer in layers[last + 1 :]:
            shape = tuple(layer.output_shape(shape))
    except (ValueError, TypeError, IndexError):
        return None
    return shape[0] if len(shape) == 1 else None


def model_from(tensors: dict, meta: dict, source: str = "<model>"):
    """Rebuild a Sequential from parsed ``tensors`` and ``meta`` (what ``loads`` /
    ``read_file`` return; registry lookups only).

    Every field is checked first (``check_meta``), then every layer's configuration and the
    parameter and state shapes it implies, against the tensors present, before any layer is
    built: a configuration naming sizes the file does not hold allocates nothing.
    """
    from .registry import LAYERS, LOSSES, MODELS, lookup

    Sequential = MODELS["Sequential"]

    check_meta(meta, source)
    if not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in tensors.items()):
        raise ValueError(f"{source}: expected tensors as a dict of names to arrays")
    loss = None
    if meta.get("loss") is not None:
        name = meta["loss"]["name"]
        try:
            loss = lookup(LOSSES, "loss", name).from_config(meta["loss"]["config"])
        except ValueError as e:
            raise ValueError(f"{source}: loss: {e}") from None
    arch = meta["architecture"]
    classes, expected, total = [], {}, 0
    for i, spec in enumerate(arch):
        where = f"{source}: architecture[{i}] ({spec['name']})"
        try:
            cls = lookup(LAYERS, "layer", spec["name"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        params, state = _param_shapes(cls, spec["config"], where)
        desc = f"layer {i} {spec['name']}({', '.join(f'{k}={_short(v, 30)}' for k, v in spec['config'].items())})"
        for prefix, table in ((f"layers.{i}.", params), (f"layers.{i}.state.", state)):
            for k, shape in table.items():
                name = prefix + k
                t = tensors.get(name)
                if t is None:
                    raise ValueError(f"{source}: tensor {name!r} of {desc} is missing")
                if t.shape != shape:
                    raise ValueError(f"{source}: tensor {name!r} has shape {t.shape}, {desc} expects {shape}")
                if t.dtype not in (np.float32, np.float64):
                    raise ValueError(
                        f"{source}: tensor {name!r} has dtype {t.dtype}; layer parameters "
                        f"and state are float32 (or float64)"
                    )
                expected[name] = i
                total += math.prod(shape)
        classes.append(cls)
    limits.check_size(f"{source}: number of parameters and state values", total, limits.MAX_PARAMS, "VECNN_MAX_PARAMS")
    for name in tensors:
        if not name.startswith(("layers.", "optimizer.")):
            raise ValueError(f"{source}: tensor {name!r} is none of vecnn's (layers.*, optimizer.*); altered file?")
        if name.startswith("layers.") and name not in expected:
            raise ValueError(
                f"{source}: tensor {name!r} belongs to no parameter or state of the architecture (altered file?)"
            )
    # everything checked: build (allocations now bounded by the tensors actually present)
    layers = []
    for i, (cls, spec) in enumerate(zip(classes, arch)):
        layer = _build(cls, spec["config"], f"{source}: architecture[{i}] ({spec['name']})")
        for prefix, table in ((f"layers.{i}.", layer.params), (f"layers.{i}.state.", layer.state)):
            for k, v in table.items():
                if tensors.get(prefix + k) is None or tensors[prefix + k].shape != v.shape:
                    raise ValueError(
                        f"{source}: layer {i} {layer!r} holds {prefix + k!r} of shape "
                        f"{v.shape}, which its config did not announce"
                    )
        layers.append(layer)
    model = Sequential(layers, seed=meta.get("seed", 0))
    # Sequential re-initialized the layers: put the saved values back into the flat buffer
    for i, layer in enumerate(model.layers):
        for k in layer.params:
            layer.params[k][...] = tensors[f"layers.{i}.{k}"]
        for k in layer.state:
            layer.state[k][...] = tensors[f"layers.{i}.state.{k}"]
        try:
            layer.check_state()
        except ValueError as e:
            raise ValueError(f"{source}: layer {i}: {e}") from None
    input_shape = meta.get("input_shape")
    if input_shape is not None:
        try:
            model.shapes(tuple(input_shape))
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{source}: input_shape {input_shape} does not fit the architecture: {e}") from None
    names = meta.get("class_names")
    if names is not None:
        width = _output_width(model.layers, input_shape)
        if width is not None and len(names) != width and not (width == 1 and len(names) == 2):
            raise ValueError(f"{source}: class_names: {len(names)} names for a model with {width} outputs")
    model.loss = loss
    model.class_names = names
    model.metadata = {k: v for k, v in meta.items() if k not in _KNOWN}
    return model


def load_model(path: str | os.PathLike) -> Any:
    """Load a model saved by ``Sequential.save``. Raises ``ValueError`` on a bad file (naming
    the file and what is wrong), ``OSError`` on an unreadable path, nothing else."""
    tensors, meta = read_file(path)
    return model_from(tensors, meta, str(path))
