"""Downloads against a server this test starts on 127.0.0.1: good files, a wrong digest, a
truncated transfer, a server that is gone, a stalled one. A failed download leaves nothing."""

import dataclasses
import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

import vecnn as vn
from vecnn.data import downloads, named
from vecnn.data.idx import write_idx

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Small MNIST-style .gz files and the arrays they hold."""
    folder = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 8, dtype=np.uint8),
    }
    data = {}
    for name, a in arrays.items():
        write_idx(folder / name, a)
        data[name] = (folder / name).read_bytes()
    return arrays, data


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}  # path -> bytes, set per server
    mode = "good"  # good | truncated | stall | bigger | unsized-bigger | unsized-short | endless
    sent = 0  # bytes of the endless body the server got to send

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if self.mode == "endless":  # no length announced, and 256 MiB of data: the client must hang up
            self.send_response(200)
            self.end_headers()
            block = b"\x00" * (1 << 20)
            try:
                for _ in range(256):
                    self.wfile.write(block)
                    type(self).sent += len(block)
            except OSError:  # the client hung up
                pass
            self.close_connection = True
            return
        if self.mode == "stall":
            time.sleep(3)
        if self.mode in ("bigger", "unsized-bigger"):
            body = body + b"\x00" * 100
        if self.mode == "unsized-short":
            body = body[:-3]
        self.send_response(200)
        if not self.mode.startswith("unsized"):  # else: HTTP/1.0, the body ends when the server hangs up
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "truncated":
            self.wfile.write(body[: len(body) // 2])  # promise it all, send half, hang up
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(blobs):
    """Start an HTTP server on 127.0.0.1 (a free port); yields (base_url, handler class)."""
    handler = type("H", (Handler,), {"files": dict(blobs[1]), "mode": "good"})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/mnist/", handler
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch, blobs):
    """Empty search places, and 'mnist' entries whose digests and sizes are those of the test files."""
    monkeypatch.delenv("VECNN_DATA", raising=False)
    monkeypatch.delenv("VECNN_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(named, "SYSTEM_DIR", tmp_path / "system")
    data = blobs[1]
    d = dataclasses.replace(
        named.DATASETS["mnist"],
        sha256={k: hashlib.sha256(v).hexdigest() for k, v in data.items()},
        size={k: len(v) for k, v in data.items()},
    )
    monkeypatch.setitem(named.DATASETS, "mnist", d)
    return tmp_path / "xdg" / "vecnn" / "mnist"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_download_lands_in_the_cache_and_loads(server, isolated, blobs):
    url, _ = server
    X_train, y_train, X_test, y_test = vn.data.load("mnist", download=True, mirror=url)
    assert leftovers(isolated) == sorted(FILES)  # nothing but the four files
    arrays = blobs[0]
    assert np.array_equal(y_train, arrays["train-labels-idx1-ubyte.gz"])
    assert np.allclose(X_test[:, 0], arrays["t10k-images-idx3-ubyte.gz"] / 255.0, atol=1e-7)
    # found in the cache next time, no download asked for
    assert np.array_equal(vn.data.load("mnist")[3], y_test)


def test_mirror_from_environment(server, isolated, monkeypatch):
    url, _ = server
    monkeypatch.setenv("VECNN_MIRROR", url)
    vn.data.download("mnist")
    assert leftovers(isolated) == sorted(FILES)


def test_no_download_unless_asked(server, isolated):
    with pytest.raises(vn.data.DatasetNotFoundError, match="--download"):
        vn.data.load("mnist", mirror=server[0])
    assert not isolated.exists()


def test_download_into_root_when_root_is_given(server, isolated, tmp_path):
    root = tmp_path / "myroot"
    vn.data.load("mnist", root=root, download=True, mirror=server[0])
    assert leftovers(root / "mnist") == sorted(FILES) and not isolated.exists()


def test_wrong_digest_leaves_nothing(server, isolated, monkeypatch):
    d = named.DATASETS["mnist"]
    bad = {**d.sha256, "train-images-idx3-ubyte.gz": "0" * 64}
    monkeypatch.setitem(named.DATASETS, "mnist", dataclasses.replace(d, sha256=bad))
    with pytest.raises(vn.data.DownloadError, match="SHA-256 mismatch"):
        vn.data.load("mnist", download=True, mirror=server[0])
    assert "train-images-idx3-ubyte.gz" not in leftovers(isolated)
    assert not [n for n in leftovers(isolated) if n.endswith(".part")]


def test_a_broken_off_download_is_completed_later(server, isolated, monkeypatch):
    d = named.DATASETS["mnist"]
    bad = {**d.sha256, "t10k-images-idx3-ubyte.gz": "0" * 64}
    monkeypatch.setitem(named.DATASETS, "mnist", dataclasses.replace(d, sha256=bad))
    with pytest.raises(vn.data.DownloadError):
        vn.data.load("mnist", download=True, mirror=server[0])
    kept = leftovers(isolated)
    assert kept == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # verified ones stay
    with pytest.raises(vn.data.IncompleteDatasetError, match="t10k-images-idx3-ubyte"):
        vn.data.load("mnist")  # not asked to download: say what is missing
    monkeypatch.setitem(named.DATASETS, "mnist", d)
    assert len(vn.data.load("mnist", download=True, mirror=server[0])[3]) == 8
    assert leftovers(isolated) == sorted(FILES)


def test_truncated_transfer_leaves_nothing(server, isolated):
    url, handler = server
    handler.mode = "truncated"
    with pytest.raises(vn.data.DownloadError, match="train-images-idx3-ubyte.gz"):
        vn.data.download("mnist", mirror=url, timeout=5)
    assert leftovers(isolated) == []


@pytest.mark.parametrize(
    "mode, message",
    [
        ("bigger", "offers .* bytes, expected"),
        ("unsized-bigger", "sent more than"),
        ("unsized-short", "incomplete transfer"),
    ],
)
def test_other_lengths_than_published_are_refused(server, isolated, mode, message):
    url, handler = server
    handler.mode = mode
    with pytest.raises(vn.data.DownloadError, match=message):
        vn.data.download("mnist", mirror=url, timeout=5)
    assert leftovers(isolated) == []


def test_an_endless_body_is_refused_after_the_published_size(server, isolated):
    """A mirror streaming far more than the published file (here 256 MiB, no length announced)
    is refused once the published size is passed: the rest is never read (nor written)."""
    url, handler = server
    handler.mode = "endless"
    with pytest.raises(vn.data.DownloadError, match="sent more than the expected"):
        vn.data.download("mnist", mirror=url, timeout=5)
    assert leftovers(isolated) == []
    assert handler.sent < 64 << 20  # the socket buffers' worth at most, not the 256 MiB


def test_server_gone_is_a_clear_error(isolated):
    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(vn.data.DownloadError, match="cannot reach"):
        vn.data.download("mnist", mirror=f"http://127.0.0.1:{port}/", timeout=5)
    assert leftovers(isolated) == []


def test_stalled_server_times_out(server, isolated):
    url, handler = server
    handler.mode = "stall"
    with pytest.raises(vn.data.DownloadError, match="timed out|no answer"):
        vn.data.download("mnist", mirror=url, timeout=0.5)
    assert leftovers(isolated) == []


def test_http_error_is_reported(server, isolated):
    url, _ = server
    isolated.mkdir(parents=True)
    with pytest.raises(vn.data.DownloadError, match="HTTP 404"):
        downloads.fetch(url + "missing.gz", isolated / "missing.gz", "0" * 64, timeout=5)
    assert leftovers(isolated) == []


def test_only_http_mirrors(isolated):
    with pytest.raises(ValueError, match="http"):
        vn.data.download("mnist", mirror="file:///etc/")


def test_digits_has_nothing_to_download():
    with pytest.raises(ValueError, match="built in"):
        vn.data.download("digits")


def test_published_digests_are_recorded_for_every_file():
    for name in ("fashion-mnist", "mnist", "kmnist"):
        d = named.DATASETS[name]
        assert sorted(d.sha256) == sorted(FILES) == sorted(d.size)
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in d.sha256.values())
        assert d.mirror.startswith(("http://", "https://"))
