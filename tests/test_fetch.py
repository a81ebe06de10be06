"""fetch_pets against a real local HTTP server serving small archives built here."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.progress import Progress
from typer.testing import CliRunner

from unetq.cli import app
from unetq.config import DataConfig
from unetq.data import fetch, open_dataset
from unetq.data.fetch import MARKER, NetworkError, fetch_pets
from unetq.data.pets import scan_pets
from unetq.errors import DataError

NAMES = ["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2", "beagle_3"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("UNETQ_DATA_DIR", raising=False)
    monkeypatch.delenv("UNETQ_OFFLINE", raising=False)


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _mini_pets_archives() -> dict[str, bytes]:
    """images.tar.gz and annotations.tar.gz in the official layout (5 pets, 1 .mat file)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for name in NAMES:
        pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        images.append(_file(f"images/{name}.jpg", _png_bytes(pixels, "JPEG")))
        trimap = rng.integers(1, 4, size=(40, 48), dtype=np.uint8)
        annotations.append(_file(f"annotations/trimaps/{name}.png", _png_bytes(trimap)))
    images.append(_file("images/Abyssinian_1.mat", b"MATLAB 5.0 MAT-file"))
    lists = "#Image CLASS-ID SPECIES BREED ID\n" + "".join(f"{n} 1 1 1\n" for n in NAMES[:3])
    annotations.append(_file("annotations/trainval.txt", lists.encode()))
    tests = "".join(f"{n} 2 2 1\n" for n in NAMES[3:])
    annotations.append(_file("annotations/test.txt", tests.encode()))
    return {"images.tar.gz": _tar_gz(images), "annotations.tar.gz": _tar_gz(annotations)}


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


class _Server:
    """A threaded HTTP server on 127.0.0.1 that honours `Range: bytes=N-` requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drop_after: int | None = None  # close the connection after this many body bytes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes=") and ranged.endswith("-"):
                    start = int(ranged[6:-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None:
                    self.wfile.write(body[: server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    server.drop_after = None
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pets/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archives():
    return _mini_pets_archives()


@pytest.fixture
def server(archives):
    srv = _Server(archives)
    yield srv
    srv.close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".extracting-" in p.name)


def test_fetch_downloads_checks_and_extracts(tmp_path, server, archives):
    dest = tmp_path / "pets"
    with Progress(disable=True) as progress:
        out = fetch_pets(dest, urls=[server.url], checksums=_md5s(archives), progress=progress)
    assert out == dest
    assert {t.description for t in progress.tasks} >= {"download images.tar.gz"}
    assert (dest / MARKER).is_file()
    index = scan_pets(dest, DataConfig(split="official"))
    assert [p.name for p in index.pairs] == sorted(NAMES)
    assert [Path(p).name for p, _ in index.skipped] == ["Abyssinian_1.mat"]
    assert index.lists == {"trainval": NAMES[:3], "test": NAMES[3:]}
    assert not (tmp_path / ".pets.downloads").exists()  # archives removed once extracted
    assert _leftovers(tmp_path) == []
    # A completed destination is reused without touching the network.
    seen = len(server.requests)
    assert fetch_pets(dest, urls=[server.url], checksums=_md5s(archives)) == dest
    assert len(server.requests) == seen


def test_fetch_defaults_to_cache_folder(tmp_path, server, archives):
    out = fetch_pets(urls=[server.url], checksums=_md5s(archives))
    assert out == tmp_path / "cache" / "oxford-iiit-pet"
    assert fetch.is_complete(out)
    # open_dataset (source auto) now finds the extracted copy in the cache.
    index = open_dataset(DataConfig())
    assert index.root == out and not index.synthetic
    assert "downloaded copy" in index.note


def test_fetch_falls_back_to_mirror(tmp_path, server, archives):
    dest = tmp_path / "pets"
    fetch_pets(dest, urls=[_closed_port_url(), server.url], checksums=_md5s(archives))
    assert fetch.is_complete(dest)


def test_fetch_resumes_a_partial_download(tmp_path, server, archives):
    dest = tmp_path / "pets"
    downloads = tmp_path / ".pets.downloads"
    downloads.mkdir()
    half = len(archives["images.tar.gz"]) // 2
    (downloads / "images.tar.gz.part").write_bytes(archives["images.tar.gz"][:half])
    fetch_pets(dest, urls=[server.url], checksums=_md5s(archives))
    assert ("/pets/images.tar.gz", f"bytes={half}-") in server.requests
    assert fetch.is_complete(dest)
    assert len(list((dest / "images").iterdir())) == len(NAMES) + 1


def test_fetch_accepts_a_complete_part_file(tmp_path, server, archives):
    dest = tmp_path / "pets"
    downloads = tmp_path / ".pets.downloads"
    downloads.mkdir()
    (downloads / "images.tar.gz.part").write_bytes(archives["images.tar.gz"])
    fetch_pets(dest, urls=[server.url], checksums=_md5s(archives))  # server answers 416
    size = len(archives["images.tar.gz"])
    assert ("/pets/images.tar.gz", f"bytes={size}-") in server.requests
    assert fetch.is_complete(dest)


def test_fetch_resumes_after_a_dropped_connection(tmp_path, server, archives):
    dest = tmp_path / "pets"
    server.drop_after = 1000
    with pytest.raises(NetworkError, match=r"download failed: .*\(no network\?\)"):
        fetch_pets(dest, urls=[server.url], checksums=_md5s(archives))
    part = tmp_path / ".pets.downloads" / "images.tar.gz.part"
    assert part.stat().st_size == 1000
    assert not dest.exists()
    fetch_pets(dest, urls=[server.url], checksums=_md5s(archives))
    assert server.requests[-2] == ("/pets/images.tar.gz", "bytes=1000-")
    assert fetch.is_complete(dest)


def test_wrong_checksum_fails_and_removes_the_archive(tmp_path, server, archives):
    dest = tmp_path / "pets"
    md5s = _md5s(archives) | {"images.tar.gz": "0" * 32}
    with pytest.raises(DataError, match="wrong checksum for images.tar.gz"):
        fetch_pets(dest, urls=[server.url], checksums=md5s)
    assert not dest.exists()
    assert not (tmp_path / ".pets.downloads" / "images.tar.gz").exists()


def test_truncated_archive_fails_cleanly(tmp_path, server, archives):
    dest = tmp_path / "pets"
    truncated = archives["annotations.tar.gz"][: len(archives["annotations.tar.gz"]) * 2 // 3]
    server.files["annotations.tar.gz"] = truncated
    md5s = _md5s(archives) | {"annotations.tar.gz": hashlib.md5(truncated).hexdigest()}
    with pytest.raises(DataError, match="corrupt or truncated archive") as err:
        fetch_pets(dest, urls=[server.url], checksums=md5s)
    assert "\n" not in str(err.value) and "annotations.tar.gz" in str(err.value)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def _symlink_out() -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo("images/link.jpg")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../outside.txt"
    return info, None


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("../evil.txt", b"evil"), "points outside the target"),
        (_file("images/../../evil.txt", b"evil"), "points outside the target"),
        (_file("/tmp/unetq-evil-absolute.txt", b"evil"), "absolute path"),
        (_symlink_out(), "leads out of the target"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out"],
)
def test_hostile_member_is_refused(tmp_path, server, archives, member, message):
    dest = tmp_path / "work" / "pets"
    bad = _tar_gz([_file("images/ok.jpg", b"fine"), member])
    server.files["images.tar.gz"] = bad
    md5s = _md5s(archives) | {"images.tar.gz": hashlib.md5(bad).hexdigest()}
    with pytest.raises(DataError, match=message):
        fetch_pets(dest, urls=[server.url], checksums=md5s)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert not Path("/tmp/unetq-evil-absolute.txt").exists()


def test_archives_without_pets_layout_are_refused(tmp_path, server):
    dest = tmp_path / "pets"
    server.files = {"images.tar.gz": _tar_gz([_file("other/x.txt", b"x")])}
    with pytest.raises(DataError, match="no Oxford-IIIT Pet layout"):
        fetch_pets(dest, urls=[server.url], checksums={"images.tar.gz": None})
    assert not dest.exists()


def test_network_failure_is_one_line_data_error(tmp_path):
    with pytest.raises(NetworkError) as err:
        fetch_pets(tmp_path / "pets", urls=[_closed_port_url()], timeout=2)
    text = str(err.value)
    assert text.startswith("download failed: http://127.0.0.1:") and "(no network?)" in text
    assert "\n" not in text
    assert not (tmp_path / "pets").exists()


def test_missing_file_on_server_is_a_download_failure(tmp_path, server):
    with pytest.raises(NetworkError, match="HTTP 404"):
        fetch_pets(tmp_path / "pets", urls=[server.url], checksums={"nothere.tar.gz": None})


def test_non_empty_foreign_destination_is_refused(tmp_path, server, archives):
    dest = tmp_path / "pets"
    dest.mkdir()
    (dest / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match="not a finished download"):
        fetch_pets(dest, urls=[server.url], checksums=_md5s(archives))
    assert (dest / "mine.txt").read_text() == "user data"
    assert server.requests == []


def test_auto_source_falls_back_to_synthetic_without_network(monkeypatch):
    real_fetch = fetch.fetch_pets
    url = _closed_port_url()
    monkeypatch.setattr(fetch, "fetch_pets", lambda **kw: real_fetch(urls=[url], timeout=2, **kw))
    index = open_dataset(DataConfig(synthetic_count=10, image_size=32))
    assert index.synthetic and index.format == "synthetic"
    assert index.note.startswith("synthetic dataset (no data found and download unavailable")
    assert "\n" not in index.note
    assert len(index.pairs) == 10 and index.num_classes == 3


def test_explicit_missing_data_dir_never_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETQ_OFFLINE", "1")
    with pytest.raises(DataError, match="data folder not found"):
        open_dataset(DataConfig(data_dir=tmp_path / "nope"))
    monkeypatch.setenv("UNETQ_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="UNETQ_DATA_DIR points to a missing folder"):
        open_dataset(DataConfig())


def test_cli_fetch_uses_local_copy(tmp_path, server, archives):
    dest = fetch_pets(tmp_path / "pets", urls=[server.url], checksums=_md5s(archives))
    result = CliRunner().invoke(app, ["data", "fetch", "--data-dir", str(dest)])
    assert result.exit_code == 0, result.output
    assert "nothing downloaded" in result.output
