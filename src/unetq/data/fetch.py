"""Download Oxford-IIIT Pet: resumable, MD5-checked, extracted safely and atomically.

The archives are downloaded beside the destination (`.<dest>.downloads/`, resuming a
`.part` file with an HTTP Range request), checked against their MD5, extracted into a
temporary folder with tarfile's 'data' filter plus an explicit check of every member, and
renamed onto the destination with a marker file. A destination without the marker is never
used, so nothing half-extracted is ever read.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import shutil
import tarfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from unetq.data.cache import cache_dir
from unetq.data.pets import is_pets_layout
from unetq.errors import DataError

if TYPE_CHECKING:
    from rich.progress import Progress

BASE_URLS = (
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/",
    "https://thor.robots.ox.ac.uk/datasets/pets/",
)
CHECKSUMS = {
    "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    "annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
}
DATASET_DIRNAME = "oxford-iiit-pet"
MARKER = ".unetq-complete"
TIMEOUT_S = 10.0  # seconds per connect / read; no network should fail fast
CHUNK = 1 << 20
_NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError, http.client.HTTPException)


class NetworkError(DataError):
    """The download could not reach any URL (no network, server down, file gone)."""


def pets_cache_root() -> Path:
    """Where fetch_pets extracts by default: cache_dir()/oxford-iiit-pet."""
    return cache_dir() / DATASET_DIRNAME


def is_complete(root: Path) -> bool:
    """True when `root` holds a finished extraction (its marker file is written last)."""
    return (Path(root) / MARKER).is_file()


def fetch_pets(
    dest: Path | None = None,
    urls: Sequence[str] = BASE_URLS,
    progress: Progress | None = None,
    *,
    checksums: Mapping[str, str | None] = CHECKSUMS,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download and extract Oxford-IIIT Pet into `dest` (default: the cache); return `dest`.

    `urls` are base URLs tried in order for each archive; `checksums` maps archive file names
    to their MD5 (None skips the check). A completed `dest` is returned without any download.
    Raises NetworkError when no URL answers, DataError for a wrong checksum or a bad archive.
    """
    dest = Path(dest) if dest is not None else pets_cache_root()
    if is_complete(dest):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if dest.is_dir() and is_pets_layout(dest):
            return dest  # a ready copy (e.g. extracted by hand)
        raise DataError(f"destination exists and is not a finished download; remove it: {dest}")
    if os.environ.get("UNETQ_OFFLINE", "").strip() not in ("", "0"):
        raise NetworkError("download failed: disabled by UNETQ_OFFLINE (no network?)")
    downloads = dest.parent / f".{dest.name}.downloads"
    try:
        archives = [
            download(name, urls, md5, downloads, progress, timeout)
            for name, md5 in checksums.items()
        ]
    except DataError:
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()  # keep partial downloads (to resume), drop an empty folder
        raise
    try:
        extract_archives(archives, dest, progress)
    except DataError:
        for archive in archives:
            archive.unlink(missing_ok=True)  # bad archive: the next run downloads it again
        raise
    shutil.rmtree(downloads, ignore_errors=True)
    return dest


def download(
    name: str,
    urls: Sequence[str],
    md5: str | None,
    folder: Path,
    progress: Progress | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download folder/name from the first base URL that answers, resuming folder/name.part."""
    final = folder / name
    if final.is_file() and (md5 is None or file_md5(final) == md5):
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{name}.part"
    errors = []
    for base in urls:
        url = base.rstrip("/") + "/" + name
        try:
            _fetch_to(url, part, progress, timeout)
            break
        except _NETWORK_ERRORS as exc:
            errors.append(f"{url}: {_reason(exc)}")
    else:
        tried = f" (and {len(errors) - 1} mirror(s))" if len(errors) > 1 else ""
        raise NetworkError(f"download failed: {errors[0]}{tried} (no network?)")
    os.replace(part, final)
    if md5 is not None:
        got = file_md5(final)
        if got != md5:
            final.unlink(missing_ok=True)
            raise DataError(
                f"wrong checksum for {name}: MD5 {got}, expected {md5}; file removed, rerun to "
                f"download again: {url}"
            )
    return final


def _fetch_to(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "unetq"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and have:
            return  # the .part is already complete; the checksum decides
        raise
    with response:
        start = _resume_offset(response, have)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        task = None
        if progress is not None:
            task = progress.add_task(f"download {part.name[:-5]}", total=total, completed=start)
        written = start
        with part.open("r+b" if start else "wb") as fh:
            fh.seek(start)
            fh.truncate()
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                written += len(chunk)
                if task is not None:
                    progress.update(task, completed=written)
    if total is not None and written != total:
        raise http.client.IncompleteRead(b"", total - written)


def _resume_offset(response, have: int) -> int:
    """Where the response body starts in the file: `have` for a matching 206, else 0."""
    if have and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        try:
            first = int(content_range.split()[1].split("-")[0])
        except (IndexError, ValueError):
            return 0
        if first == have:
            return have
    return 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    return str(exc) or type(exc).__name__


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_archives(archives: Sequence[Path], dest: Path, progress: Progress | None = None):
    """Extract every archive into a temporary folder, check the layout, rename onto `dest`."""
    tmp = dest.parent / f".{dest.name}.extracting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for archive in archives:
            safe_extract(archive, tmp, progress)
        if not is_pets_layout(tmp):
            raise DataError(
                f"archives hold no Oxford-IIIT Pet layout (images/, annotations/trimaps/): "
                f"{archives[0].parent}"
            )
        info = {"archives": [a.name for a in archives], "extracted_at": time.time()}
        (tmp / MARKER).write_text(json.dumps(info) + "\n")
        if dest.exists():
            dest.rmdir()  # empty: fetch_pets refuses a non-empty destination
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safe_extract(archive: Path, target: Path, progress: Progress | None = None) -> None:
    """Extract a .tar.gz into `target`, refusing any member that could land outside it."""
    task = progress.add_task(f"extract {archive.name}", total=None) if progress else None
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                check_member(member, archive)
                tar.extract(member, target, filter="data")
                if task is not None:
                    progress.advance(task)
    except DataError:
        raise
    except tarfile.FilterError as exc:
        raise DataError(f"unsafe archive member ({exc}): {archive}") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(f"corrupt or truncated archive ({exc}): {archive}") from None
    except OSError as exc:
        raise DataError(f"cannot extract archive ({exc}): {archive}") from None


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths, '..' components, links leading out, and device files."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"archive member has an absolute path '{name}': {archive}")
    if ".." in Path(name.replace("\\", "/")).parts:
        raise DataError(f"archive member '{name}' points outside the target folder: {archive}")
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith(("/", "\\")):
            raise DataError(f"archive link '{name}' -> '{link}' is absolute: {archive}")
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if resolved == ".." or resolved.startswith("../"):
            raise DataError(f"archive link '{name}' -> '{link}' leads out of the target: {archive}")
    elif not (member.isfile() or member.isdir()):
        raise DataError(f"archive member '{name}' is a device or special file: {archive}")


def local_copy(data_dir: Path | None) -> tuple[Path, str] | None:
    """A local Oxford-IIIT Pet copy to use instead of downloading: (path, where it came from).

    An explicit `data_dir` must be a pets copy (else DataError); $UNETQ_DATA_DIR is used only
    when it holds one.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        if not is_pets_layout(root):
            raise DataError(
                f"not an Oxford-IIIT Pet copy (needs images/ and annotations/trimaps/): {root}"
            )
        return root, "--data-dir"
    env = os.environ.get("UNETQ_DATA_DIR", "").strip()
    if env and is_pets_layout(Path(env).expanduser()):
        return Path(env).expanduser(), "UNETQ_DATA_DIR"
    return None
