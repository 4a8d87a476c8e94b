"""Model files: one safetensors file whose header metadata carries vecnn's JSON.

Layout: tensors ``layers.<i>.<param>`` and ``layers.<i>.state.<name>`` (plus any extra
tensors, e.g. optimizer state in a checkpoint, under their own prefixes); metadata key
``vecnn`` holds JSON with the format version, the architecture, the loss, class names,
preprocessing statistics and the SHA-256 of the tensors. Loading parses the header itself,
checks every length against the file size, verifies the digest, and rebuilds layers through
the registry: nothing is unpickled, imported or executed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "vecnn-model"
FORMAT_VERSION = 1
_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
           "F16": np.float16, "I8": np.int8, "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


@contextlib.contextmanager
def atomic_open(path):
    """A binary file that appears at ``path`` only when the ``with`` block succeeds.

    Writes go to a temporary file in the same folder, which is flushed, synced and renamed
    over ``path`` at the end; on any error (or Ctrl-C) it is removed, so ``path`` keeps its
    previous content and nothing is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_open``)."""
    with atomic_open(path) as f:
        f.write(data)


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dumps(tensors: dict[str, np.ndarray], meta: dict) -> bytes:
    """Serialize ``tensors`` and JSON ``meta`` as safetensors bytes, the digest included."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {**meta, "sha256": _digest(tensors)}
    return save(tensors, metadata={"vecnn": json.dumps(meta)})


def loads(data: bytes, source: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict]:
    """Parse safetensors ``data`` written by ``dumps``; verify structure and digest.

    Raises ``ValueError`` saying what is wrong for empty, truncated, altered or foreign data.
    """
    if len(data) == 0:
        raise ValueError(f"{source}: the file is empty; not a vecnn model file")
    if len(data) < 8:
        raise ValueError(f"{source}: only {len(data)} bytes, too short for a vecnn model file (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or n > len(data) - 8:
        raise ValueError(f"{source}: not a vecnn model file, or truncated: its header claims {n} bytes "
                         f"but the file holds {len(data)}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{source}: not a vecnn model file (its header is not safetensors JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{source}: not a vecnn model file (its header is not a JSON object)")
    raw_meta = (header.pop("__metadata__", None) or {}).get("vecnn")
    if raw_meta is None:
        raise ValueError(f"{source}: a safetensors file without vecnn metadata; not a vecnn model file")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise ValueError(f"{source}: the vecnn metadata is not valid JSON (file altered?)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{source}: the metadata does not name format {FORMAT!r}; not a vecnn model file")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{source}: format version {meta.get('format_version')} is newer than this vecnn "
                         f"reads ({FORMAT_VERSION}); upgrade vecnn")
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            start, stop = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}: tensor {name!r} has a malformed header entry") from None
        if not 0 <= start <= stop <= len(body) or stop - start != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"{source}: tensor {name!r} lies outside the file or has the wrong size "
                             f"(truncated or altered file)")
        tensors[name] = np.frombuffer(body[start:stop], dtype=dtype).reshape(shape).copy()
    if _digest(tensors) != meta.get("sha256"):
        raise ValueError(f"{source}: SHA-256 mismatch: the weights were altered or corrupted "
                         f"after saving")
    return tensors, meta


def read_file(path) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such model file")
    return loads(path.read_bytes(), str(path))


# -- models ---------------------------------------------------------------------------------
def model_tensors(model) -> dict[str, np.ndarray]:
    tensors = {}
    for i, layer in enumerate(model.layers):
        for k, v in layer.params.items():
            tensors[f"layers.{i}.{k}"] = v
        for k, v in layer.state.items():
            tensors[f"layers.{i}.state.{k}"] = v
    return tensors


def model_meta(model) -> dict:
    import vecnn

    loss = model.loss
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "vecnn_version": vecnn.__version__,
        "architecture": model.config(), "seed": model.seed,
        "loss": None if loss is None else {"name": type(loss).registered_name, "config": loss.config()},
        "class_names": model.class_names,
        **{k: v for k, v in model.metadata.items() if k not in ("format", "architecture", "loss")},
    }


def save_model(model, path, extra_tensors: dict | None = None, extra_meta: dict | None = None) -> None:
    tensors = model_tensors(model)
    tensors.update(extra_tensors or {})
    atomic_write(path, dumps(tensors, {**model_meta(model), **(extra_meta or {})}))


def model_from(tensors: dict, meta: dict, source: str = "<model>"):
    """Rebuild a Sequential from parsed ``tensors`` and ``meta`` (registry lookups only)."""
    from . import losses
    from .model import Sequential
    from .registry import LAYERS, LOSSES, lookup

    try:
        arch = meta["architecture"]
        layers = [lookup(LAYERS, "layer", spec["name"]).from_config(spec["config"]) for spec in arch]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{source}: malformed architecture in the metadata ({e})") from None
    for i, layer in enumerate(layers):
        for table, prefix in ((layer.params, f"layers.{i}."), (layer.state, f"layers.{i}.state.")):
            for k, v in table.items():
                t = tensors.get(prefix + k)
                if t is None:
                    raise ValueError(f"{source}: tensor {prefix + k!r} of layer {i} {layer!r} is missing")
                if t.shape != v.shape:
                    raise ValueError(f"{source}: tensor {prefix + k!r} has shape {t.shape}, "
                                     f"layer {i} {layer!r} expects {v.shape}")
    model = Sequential(layers, seed=meta.get("seed", 0))
    # Sequential re-initialized the layers: put the saved values back into the flat buffer
    for i, layer in enumerate(model.layers):
        for k in layer.params:
            layer.params[k][...] = tensors[f"layers.{i}.{k}"]
        for k in layer.state:
            layer.state[k][...] = tensors[f"layers.{i}.state.{k}"]
    if meta.get("loss"):
        model.loss = lookup(LOSSES, "loss", meta["loss"]["name"]).from_config(meta["loss"]["config"])
    model.class_names = meta.get("class_names")
    known = {"format", "format_version", "vecnn_version", "architecture", "seed", "loss", "class_names", "sha256"}
    model.metadata = {k: v for k, v in meta.items() if k not in known}
    return model


def load_model(path):
    """Load a model saved by ``Sequential.save``. Raises ``ValueError`` on a bad file."""
    tensors, meta = read_file(path)
    return model_from(tensors, meta, str(path))
