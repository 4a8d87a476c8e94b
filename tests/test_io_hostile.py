"""Hostile model files: every one is made here from a valid file, then altered; loading must
refuse it with a ValueError naming the field, tensor or path (nothing else escapes), decide
before allocating anything the file does not hold, and never read unbounded input."""

import copy
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import vecnn as vn
from vecnn import io, limits
from vecnn import layers as L

CODES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
}


# -- making files (an independent writer: the format as specified, not io's code) --------------
def digest_v1(tensors):
    """The digest vecnn format 1 wrote: the tensors only."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def digest_v2(tensors, meta):
    """Format 2: the canonical metadata (all but sha256, sorted keys, no spaces), then the tensors."""
    m = json.dumps(
        {k: v for k, v in meta.items() if k != "sha256"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=True,
    ).encode()
    h = hashlib.sha256()
    h.update(b"vecnn-model/2 metadata " + str(len(m)).encode() + b"\n")
    h.update(m)
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def safetensors_bytes(tensors, meta_text, header_edit=None):
    """Safetensors bytes of ``tensors`` with ``meta_text`` as the vecnn metadata;
    ``header_edit(header)`` may alter the header before it is written."""
    header, chunks, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": CODES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    header["__metadata__"] = {"vecnn": meta_text}
    if header_edit is not None:
        header_edit(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def seal(tensors, meta, version=None):
    """File bytes with a digest that matches (the point is to get past the digest): of format
    ``version``, or of the one the metadata names (2 when that is not 1)."""
    meta = dict(meta) if version is None else {**meta, "format_version": version}
    v1 = meta.get("format_version") == 1 and type(meta.get("format_version")) is int
    meta["sha256"] = digest_v1(tensors) if v1 else digest_v2(tensors, meta)
    return safetensors_bytes(tensors, json.dumps(meta))


def parts(path):
    return io.read_file(path)


@pytest.fixture
def saved(tmp_path):
    """A small trained classifier saved to m.vecnn: Dense, BatchNorm1D, ReLU, Dropout, Dense."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = vn.Sequential([L.Dense(5, 8), L.BatchNorm1D(8), L.ReLU(), L.Dropout(0.2), L.Dense(8, 3)], seed=1)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    model.class_names = ["a", "b", "c"]
    model.metadata["input_shape"] = [5]
    path = tmp_path / "m.vecnn"
    model.save(path)
    return path, X


def refuse(path, match):
    with pytest.raises(ValueError, match=match) as e:
        vn.load(path)
    return str(e.value)


# -- 1. the digest covers the metadata ------------------------------------------------------------
def test_saved_file_is_format_2_and_loads(saved):
    path, X = saved
    tensors, meta = parts(path)
    assert meta["format_version"] == io.FORMAT_VERSION == 2
    assert meta["sha256"] == digest_v2(tensors, meta)  # the digest is the specified one
    assert vn.load(path).class_names == ["a", "b", "c"]


@pytest.mark.parametrize("edit", ["class_names", "relu_to_tanh", "seed", "extra_field", "loss"])
def test_editing_the_metadata_of_a_v2_file_is_refused(saved, edit):
    path, _ = saved
    tensors, meta = parts(path)
    if edit == "class_names":
        meta["class_names"] = ["c", "b", "a"]
    elif edit == "relu_to_tanh":
        assert meta["architecture"][2]["name"] == "ReLU"
        meta["architecture"][2]["name"] = "Tanh"
    elif edit == "seed":
        meta["seed"] = 2
    elif edit == "extra_field":
        meta["dataset"] = "mnist"
    else:
        meta["loss"]["config"]["label_smoothing"] = 0.5
    path.write_bytes(safetensors_bytes(tensors, json.dumps(meta)))  # the old digest kept
    refuse(path, r"m\.vecnn: SHA-256 mismatch.*metadata altered")


def test_format_1_files_still_load_with_the_tensor_digest(saved, tmp_path):
    """Files written before format 2 (digest over the tensors only) keep loading; their
    metadata is not covered (documented), their tensors are."""
    path, X = saved
    model = vn.load(path)
    tensors, meta = parts(path)
    old = tmp_path / "old.vecnn"
    old.write_bytes(seal(tensors, meta, version=1))
    loaded = vn.load(old)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.class_names == ["a", "b", "c"]
    # metadata of a v1 file is not covered by its digest: an edit there is only validated
    meta1 = {**meta, "format_version": 1, "sha256": digest_v1(tensors), "class_names": ["x", "y", "z"]}
    old.write_bytes(safetensors_bytes(tensors, json.dumps(meta1)))
    assert vn.load(old).class_names == ["x", "y", "z"]
    # ...but its tensors are
    bad = dict(tensors)
    bad["layers.0.W"] = bad["layers.0.W"] + 1
    old.write_bytes(safetensors_bytes(bad, json.dumps(meta1)))
    refuse(old, "SHA-256 mismatch: the weights were altered")


# -- 2. configs checked, shapes against the tensors, before allocating -----------------------------
def test_a_small_file_naming_a_huge_layer_allocates_nothing(saved, tmp_path, monkeypatch):
    """670 KB naming Dense(20000, 20000) cost 3.2 GB before the shape error."""
    path, _ = saved
    tensors, meta = parts(path)
    tensors["layers.0.W"] = np.zeros((400, 400), np.float32)  # 640 KB of weights
    meta["architecture"][0]["config"].update(in_features=20000, out_features=20000)
    big = tmp_path / "big.vecnn"
    big.write_bytes(seal(tensors, meta))
    assert big.stat().st_size < 700_000

    def no_layer(*a, **k):
        raise AssertionError("a layer was built before its sizes were checked")

    monkeypatch.setattr(L.Dense, "__init__", no_layer)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        msg = refuse(big, r"big\.vecnn: tensor 'layers\.0\.W' has shape \(400, 400\).*expects \(20000, 20000\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 20 * 2**20, f"{peak:,} bytes allocated"
    assert "Dense" in msg


def test_layer_sizes_beyond_the_limits_are_refused_without_allocating(saved, tmp_path, monkeypatch):
    path, _ = saved
    tensors, meta = parts(path)
    meta["architecture"][0]["config"].update(in_features=10**6, out_features=10**6)
    path.write_bytes(seal(tensors, meta))
    monkeypatch.setattr(L.Dense, "__init__", lambda *a, **k: pytest.fail("built"))
    refuse(path, r"architecture\[0\] \(Dense\).*number of parameters.*VECNN_MAX_PARAMS")


def test_residual_configs_are_checked_before_building(tmp_path, monkeypatch):
    block = L.Residual(
        [L.Conv2D(2, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(), L.Conv2D(4, 4, 3, padding=1)], projection=True
    )
    model = vn.Sequential([block, L.GlobalAvgPool2D(), L.Dense(4, 2)], seed=0)
    path = tmp_path / "r.vecnn"
    model.save(path)
    X = np.random.default_rng(0).random((3, 2, 6, 6), dtype=np.float32)
    np.testing.assert_array_equal(vn.load(path).predict(X), model.predict(X))
    tensors, meta = parts(path)
    meta["architecture"][0]["config"]["layers"][3]["config"]["out_channels"] = 30000
    path.write_bytes(seal(tensors, meta))
    monkeypatch.setattr(L.Conv2D, "__init__", lambda *a, **k: pytest.fail("built"))
    refuse(path, r"architecture\[0\] \(Residual\)|layers\.0\.f\.3\.W")


# -- 3. non-finite weights and state ----------------------------------------------------------------
@pytest.mark.parametrize(
    "name,value",
    [
        ("layers.0.W", np.nan),
        ("layers.4.b", np.inf),
        ("layers.1.state.running_var", np.inf),
        ("layers.1.state.running_mean", -np.inf),
    ],
)
def test_non_finite_weights_or_state_are_refused(saved, name, value):
    path, _ = saved
    tensors, meta = parts(path)
    tensors[name] = tensors[name].copy()
    tensors[name].reshape(-1)[0] = value
    path.write_bytes(seal(tensors, meta))
    refuse(path, rf"m\.vecnn: tensor '{name}' holds 1 non-finite value")


def test_non_finite_optimizer_state_in_a_checkpoint_is_refused(tmp_path):
    from vecnn import run

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)
    model = vn.Sequential([L.Dense(4, 3), L.ReLU(), L.Dense(3, 2)], seed=0)
    model.fit(X, y, optimizer=vn.optim.Adam(lr=1e-2), epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "epoch-001.vecnn"
    run.save_checkpoint(model, path, 1, {"loss": [0.5]})
    tensors, meta = io.read_file(path)
    slot = next(k for k in tensors if k.startswith("optimizer.") and tensors[k].dtype.kind == "f")
    tensors[slot] = tensors[slot].copy()
    tensors[slot].reshape(-1)[-1] = np.nan
    path.write_bytes(seal(tensors, meta))
    with pytest.raises(ValueError, match=rf"tensor '{slot}' holds 1 non-finite"):
        io.read_file(path)
    with pytest.raises(ValueError, match=rf"tensor '{slot}' holds 1 non-finite"):
        run.load_checkpoint(path)


# -- 4. malformed metadata: a ValueError naming the field ------------------------------------------
def _set(meta, path, value):
    *head, last = path
    target = meta
    for key in head:
        target = target[key]
    target[last] = value


def _deep(n):
    v = []
    for _ in range(n):
        v = [v]
    return v


FIELD_CASES = [
    (("format_version",), "1", "format_version: expected an integer"),
    (("format_version",), 1.5, "format_version: expected an integer"),
    (("format_version",), True, "format_version: expected an integer"),
    (("format_version",), None, "format_version: expected an integer"),
    (("format_version",), 0, "format_version: 0 is not"),
    (("format_version",), 3, "format version 3 is newer"),
    (("format",), "pickle", "does not name format"),
    (("sha256",), 5, "sha256"),
    (("vecnn_version",), [1], "vecnn_version"),
    (("architecture",), "Dense", "architecture: expected a non-empty list"),
    (("architecture",), [], "architecture: expected a non-empty list"),
    (("architecture", 0), "Dense", r"architecture\[0\]"),
    (("architecture", 0, "config"), "abc", r"architecture\[0\]"),
    (("architecture", 0, "name"), "os.system", r"architecture\[0\].*unknown layer 'os.system'"),
    (("architecture", 0, "name"), ["Dense"], r"architecture\[0\]"),
    (("architecture", 0, "config", "in_features"), "abc", r"architecture\[0\] \(Dense\).*in_features"),
    (("architecture", 0, "config", "in_features"), -5, r"architecture\[0\] \(Dense\).*in_features"),
    (("architecture", 0, "config", "in_features"), 1e9, r"architecture\[0\] \(Dense\).*in_features"),
    (("architecture", 0, "config", "in_features"), True, r"architecture\[0\] \(Dense\).*in_features"),
    (("architecture", 0, "config", "in_features"), 6, r"tensor 'layers\.0\.W' has shape \(5, 8\).*expects \(6, 8\)"),
    (("architecture", 0, "config", "bias"), "yes", r"architecture\[0\] \(Dense\).*bias"),
    (("architecture", 0, "config", "bias"), False, r"tensor 'layers\.0\.b' belongs to no parameter"),
    (("architecture", 0, "config", "init"), {"x": 1}, r"architecture\[0\] \(Dense\).*init"),
    (("architecture", 0, "config", "init"), "os.system", r"architecture\[0\] \(Dense\).*unknown initializer"),
    (("architecture", 0, "config", "nonsense"), 1, r"architecture\[0\] \(Dense\).*unexpected keyword"),
    (("architecture", 1, "config", "eps"), "abc", r"architecture\[1\] \(BatchNorm1D\).*eps"),
    (("architecture", 1, "config", "eps"), -1.0, r"architecture\[1\] \(BatchNorm1D\).*eps"),
    (("architecture", 1, "config", "momentum"), 5, r"architecture\[1\] \(BatchNorm1D\).*momentum"),
    (("architecture", 1, "config", "num_features"), [8], r"architecture\[1\] \(BatchNorm1D\).*num_features"),
    (("architecture", 2, "config", "x"), 1, r"architecture\[2\] \(ReLU\).*unexpected keyword"),
    (("architecture", 3, "config", "rate"), "0.2", r"architecture\[3\] \(Dropout\).*rate"),
    (("architecture", 3, "config", "rate"), 1.5, r"architecture\[3\] \(Dropout\).*rate"),
    (("seed",), "abc", "seed: expected"),
    (("seed",), -1, "seed: expected"),
    (("seed",), 1.5, "seed: expected"),
    (("seed",), True, "seed: expected"),
    (("seed",), {}, "seed: expected"),
    (("loss",), "cross_entropy", "loss: expected"),
    (("loss", "name"), 5, "loss: expected"),
    (("loss", "name"), "eval", "loss: unknown loss 'eval'"),
    (("loss", "config"), "abc", "loss: expected"),
    (("loss", "config", "label_smoothing"), "abc", "loss: CrossEntropy.*label_smoothing"),
    (("loss", "config", "label_smoothing"), 2, "loss: CrossEntropy.*label_smoothing"),
    (("loss", "config", "reduction"), "sum", "loss: .*unexpected keyword"),
    (("class_names",), "abc", "class_names: expected a list of strings"),
    (("class_names",), [1, 2, 3], "class_names: expected a list of strings"),
    (("class_names",), {"a": 1}, "class_names: expected a list of strings"),
    (("class_names",), ["a", "b"], "class_names: 2 names for a model with 3 outputs"),
    (("class_names",), ["a", "b", "c", "d"], "class_names: 4 names for a model with 3 outputs"),
    (("input_shape",), "5", "input_shape: expected a list of positive integers"),
    (("input_shape",), 5, "input_shape: expected a list of positive integers"),
    (("input_shape",), [0], "input_shape: expected a list of positive integers"),
    (("input_shape",), [-5], "input_shape: expected a list of positive integers"),
    (("input_shape",), [5.0], "input_shape: expected a list of positive integers"),
    (("input_shape",), [True], "input_shape: expected a list of positive integers"),
    (("input_shape",), [1, 100000, 100000], "input_shape"),
    (("input_shape",), [10**6, 10**6], "input_shape.*more than vecnn allows"),
    (("input_shape",), [7], r"input_shape \[7\] does not fit the architecture"),
    (("dataset",), 5, "dataset: expected"),
    (("checkpoint",), "abc", "checkpoint: expected an object"),
    (("extra",), _deep(500), "nests deeper than"),
]


@pytest.mark.parametrize(
    "path,value,match", FIELD_CASES, ids=[f"{'.'.join(map(str, p))}={str(v)[:20]}" for p, v, _ in FIELD_CASES]
)
def test_malformed_metadata_is_a_value_error_naming_the_field(saved, path, value, match):
    file, _ = saved
    tensors, meta = parts(file)
    _set(meta, path, value)
    file.write_bytes(safetensors_bytes(tensors, json.dumps(meta)) if path == ("sha256",) else seal(tensors, meta))
    refuse(file, r"m\.vecnn: .*" + match)


def test_metadata_that_is_not_an_object(saved):
    path, _ = saved
    tensors, _ = parts(path)
    for text, match in [
        ('"abc"', "does not name format"),
        ("[1, 2]", "does not name format"),
        ("{", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"a": ' + "1" * 5000 + "}", "not valid JSON"),
    ]:
        path.write_bytes(safetensors_bytes(tensors, text))
        refuse(path, match)


def test_architectures_of_more_layers_than_allowed(saved):
    path, _ = saved
    tensors, meta = parts(path)
    meta["architecture"] += [{"name": "ReLU", "config": {}}] * 10_000
    path.write_bytes(seal(tensors, meta))
    refuse(path, r"m\.vecnn: architecture: more than 10,000 layers")
    meta["architecture"] = meta["architecture"][:5] + [
        {"name": "Residual", "config": {"layers": [{"name": "ReLU", "config": {}}] * 10_000}}
    ]
    path.write_bytes(seal(tensors, meta))
    refuse(path, r"m\.vecnn: architecture: more than 10,000 layers")


def test_residual_blocks_nested_hundreds_deep(tmp_path):
    model = vn.Sequential([L.Dense(3, 3)], seed=0)
    path = tmp_path / "deep.vecnn"
    model.save(path)
    tensors, meta = parts(path)
    for depth, match in [(20, "nested more than 16 deep"), (300, "nests deeper than")]:
        spec = {"name": "ReLU", "config": {}}
        for _ in range(depth):
            spec = {"name": "Residual", "config": {"layers": [spec], "projection": None}}
        meta["architecture"] = [spec, *meta["architecture"]]
        tensors2 = {k.replace("layers.0.", "layers.1."): v for k, v in tensors.items()}
        path.write_bytes(seal(tensors2, meta))
        refuse(path, match)
        meta["architecture"] = meta["architecture"][1:]


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda h: h["layers.0.W"].update(dtype="F99"), "tensor 'layers.0.W' has dtype 'F99'"),
        (lambda h: h["layers.0.W"].update(shape="abc"), "tensor 'layers.0.W' has a malformed"),
        (lambda h: h["layers.0.W"].update(shape=[-5, 8]), "tensor 'layers.0.W' has a malformed shape"),
        (lambda h: h["layers.0.W"].update(shape=[10**6, 10**6]), "tensor 'layers.0.W'.*more than vecnn allows"),
        (lambda h: h["layers.0.W"].update(data_offsets=[0]), "tensor 'layers.0.W' has malformed data_offsets"),
        (lambda h: h["layers.0.W"].update(data_offsets=[0, 10**12]), "tensor 'layers.0.W' lies outside the file"),
        (lambda h: h.update({"layers.0.W": "abc"}), "tensor 'layers.0.W' has a malformed header entry"),
        (lambda h: h["layers.0.b"].update(data_offsets=[0, 32]), "overlaps another or leaves a gap"),
        (lambda h: h.update({"__metadata__": ["x"]}), r"__metadata__ is not a JSON object"),
        (lambda h: h["__metadata__"].update(vecnn=5), "vecnn metadata is not a JSON string"),
        (lambda h: h.pop("__metadata__"), "without vecnn metadata"),
    ],
)
def test_malformed_tensor_headers(saved, edit, match):
    path, _ = saved
    tensors, meta = parts(path)
    path.write_bytes(safetensors_bytes(tensors, json.dumps(meta), header_edit=edit))
    refuse(path, r"m\.vecnn: .*" + match)


def test_tensor_table_mismatches(saved):
    path, _ = saved
    tensors, meta = parts(path)
    for change, match in [
        (
            lambda t: t.pop("layers.1.state.running_var"),
            r"tensor 'layers\.1\.state\.running_var' of layer 1 .* is missing",
        ),
        (lambda t: t.update({"layers.2.W": np.zeros(3, np.float32)}), r"tensor 'layers\.2\.W' belongs to no"),
        (lambda t: t.update({"layers.0.W": t["layers.0.W"].astype(np.int64)}), r"'layers\.0\.W' has dtype int64"),
    ]:
        t = dict(tensors)
        change(t)
        path.write_bytes(seal(t, meta))
        refuse(path, match)
    path.write_bytes(seal(tensors, meta) + b"\0" * 8)
    refuse(path, "bytes after the last tensor")


def test_checkpoint_metadata_is_checked(tmp_path):
    from vecnn import run

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)
    model = vn.Sequential([L.Dense(4, 3), L.Dropout(0.1), L.Dense(3, 2)], seed=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "epoch-001.vecnn"
    run.save_checkpoint(model, path, 1, {"loss": [0.5]})
    tensors, meta = io.read_file(path)
    assert run.load_checkpoint(path)[1] == 1
    for key, value, match in [
        (("checkpoint", "epoch"), "1", "checkpoint: epoch"),
        (("checkpoint", "optimizer"), "Adam", "checkpoint: optimizer"),
        (("checkpoint", "rng"), [], "checkpoint: rng"),
        (("checkpoint", "rng", "shuffle"), {"bit_generator": "os.system"}, "checkpoint: rng.shuffle"),
        (("checkpoint", "rng", "shuffle", "state", "state"), "abc", "checkpoint: rng.shuffle: not a valid PCG64"),
        (("checkpoint", "rng", "layers", "7"), meta["checkpoint"]["rng"]["shuffle"], "rng.layers: '7'"),
        (("checkpoint", "history"), {"loss": ["x"]}, "checkpoint: history"),
        (("checkpoint", "run_config"), "abc", "checkpoint: run_config"),
    ]:
        m = copy.deepcopy(meta)
        _set(m, key, value)
        path.write_bytes(seal(tensors, m))
        with pytest.raises(ValueError, match=match):
            io.read_file(path)
        with pytest.raises(ValueError, match=match):
            run.load_checkpoint(path)


# -- 5. reading: only regular files, bounded ------------------------------------------------------
def test_a_directory_is_a_value_error(tmp_path):
    refuse(tmp_path, rf"{tmp_path}: is a directory, not a model file")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_without_reading_it():
    refuse("/dev/zero", "/dev/zero: not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.vecnn"
    os.mkfifo(fifo)
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("loading a FIFO blocked"))
    signal.alarm(10)
    try:
        refuse(fifo, "model.vecnn: not a regular file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_huge_non_model_file_is_refused_after_its_first_bytes(tmp_path):
    path = tmp_path / "huge.bin"
    with open(path, "wb") as f:  # sparse: 64 GiB of zeros, no disk used
        f.truncate(64 * 2**30)
    tracemalloc.start()
    try:
        refuse(path, "huge.bin: .*not a vecnn model file")
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()
    with open(path, "r+b") as f:  # a header length beyond any model's
        f.write(struct.pack("<Q", 2**40))
    refuse(path, r"huge.bin: not a vecnn model file: its first 8 bytes declare a header of 1,099,511,627,776")


def test_tensor_bytes_beyond_the_limits_are_refused_before_reading(saved, monkeypatch):
    path, _ = saved
    monkeypatch.setattr(limits, "MAX_PARAMS", 4)
    refuse(path, r"m\.vecnn: .*bytes of tensors, more than a model within limits.MAX_PARAMS")


def test_loads_and_read_file_agree(saved):
    path, X = saved
    t1, m1 = io.read_file(path)
    t2, m2 = io.loads(path.read_bytes(), str(path))
    assert m1 == m2 and t1.keys() == t2.keys()
    with pytest.raises(ValueError, match="<bytes>: .*SHA-256 mismatch"):
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        io.loads(bytes(data))


# -- 6. atomic writes follow the umask ---------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("proc", [True, False])
def test_saved_files_follow_the_umask(tmp_path, monkeypatch, mask, proc):
    if not proc:  # the fallback where /proc is not there

        def no_proc(*a, **k):
            raise OSError("no /proc")

        from vecnn import files

        monkeypatch.setattr(files, "open", no_proc, raising=False)
    old = os.umask(mask)
    try:
        vn.Sequential([L.Dense(2, 2)], seed=0).save(tmp_path / "m.vecnn")
        io.atomic_write(tmp_path / "x" / "metrics.jsonl", b"{}\n")
        assert os.umask(mask) == mask  # the umask itself is unchanged
    finally:
        os.umask(old)
    for p in (tmp_path / "m.vecnn", tmp_path / "x" / "metrics.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, oct(p.stat().st_mode)


def test_saving_class_names_that_a_file_cannot_hold_is_refused(tmp_path):
    model = vn.Sequential([L.Dense(2, 3)], seed=0)
    model.class_names = [0, 1, 2]
    with pytest.raises(ValueError, match="class_names: expected a list of strings"):
        model.save(tmp_path / "m.vecnn")
    assert not (tmp_path / "m.vecnn").exists()


# -- fuzz: only ValueError ever escapes ------------------------------------------------------------
SWAPS = ["x", "", 1.5, -1, 0, 10**30, True, None, [], {}, [[[]]], {"name": "x"}, float("nan")]


def _fields(meta, prefix=()):
    """Every key path of ``meta``, down through objects and lists (not the digest)."""
    for k, v in meta.items() if isinstance(meta, dict) else enumerate(meta):
        if prefix == () and k == "sha256":
            continue
        yield prefix + (k,)
        if isinstance(v, (dict, list)):
            yield from _fields(v, prefix + (k,))


def _try_load(path):
    try:
        vn.load(path)
    except ValueError as e:
        assert str(e), "a ValueError without a message"
        return str(e)
    return None


@pytest.mark.parametrize("swap", range(len(SWAPS)), ids=[repr(s)[:10] for s in SWAPS])
def test_fuzz_type_swaps_of_every_metadata_field(saved, swap):
    """Every field (and every value inside the architecture) replaced by values of other types,
    with the digest recomputed so that the check of the field itself is what is tested."""
    path, _ = saved
    tensors, meta = parts(path)
    n = 0
    for field in list(_fields(meta)):
        m = copy.deepcopy(meta)
        _set(m, field, SWAPS[swap])
        path.write_bytes(seal(tensors, m))
        msg = _try_load(path)
        if msg is not None:
            assert str(path) in msg
        n += 1
    assert n > 30


@pytest.mark.parametrize("seed", range(8))
def test_fuzz_byte_flips_and_truncations(saved, seed):
    """Random bytes of the header (length and JSON), truncations anywhere, and characters of
    the metadata changed and resealed: each file loads or is a ValueError, nothing else."""
    path, _ = saved
    good = path.read_bytes()
    tensors, meta = parts(path)
    (n,) = struct.unpack("<Q", good[:8])
    rng = np.random.default_rng(seed)
    outcomes = set()
    for _ in range(40):
        data = bytearray(good)
        for off in rng.integers(0, 8 + n, int(rng.integers(1, 4))):
            data[off] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        outcomes.add(_try_load(path) is None)
    for cut in rng.integers(0, len(good), 20):
        path.write_bytes(good[:cut])
        assert _try_load(path) is not None
    text = json.dumps(meta)
    for _ in range(40):
        i = int(rng.integers(0, len(text)))
        mutated = text[:i] + chr(int(rng.integers(32, 127))) + text[i + 1 :]
        try:
            m = json.loads(mutated)
        except ValueError:
            m = None
        path.write_bytes(seal(tensors, m) if isinstance(m, dict) else safetensors_bytes(tensors, mutated))
        outcomes.add(_try_load(path) is None)
    assert False in outcomes  # (most mutations are refused)


# -- the command line: exit 2 and one line ---------------------------------------------------------
def _cli(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vecnn.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "target,match",
    [
        ("DIR", "is a directory"),
        ("/dev/zero", "not a regular file"),
        ("altered", "SHA-256 mismatch"),
        ("nan", "non-finite"),
    ],
)
def test_cli_info_on_bad_model_files_exits_2_with_one_line(saved, tmp_path, target, match):
    if target == "/dev/zero" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    path, _ = saved
    tensors, meta = parts(path)
    if target == "DIR":
        arg = str(tmp_path / "adir")
        os.mkdir(arg)
    elif target == "altered":
        meta["class_names"] = ["x", "y", "z"]
        arg = str(tmp_path / "altered.vecnn")
        with open(arg, "wb") as f:
            f.write(safetensors_bytes(tensors, json.dumps(meta)))
    elif target == "nan":
        tensors["layers.0.W"] = np.full_like(tensors["layers.0.W"], np.nan)
        arg = str(tmp_path / "nan.vecnn")
        with open(arg, "wb") as f:
            f.write(seal(tensors, meta))
    else:
        arg = target
    r = _cli(["info", arg], tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert match in lines[0] and arg in lines[0]
    assert r.stdout == ""
