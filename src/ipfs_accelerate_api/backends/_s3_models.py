"""The S3 model layout and the local-file side of transfers (no boto3 here).

A model version lives under one prefix::

    {name}/{version}/manifest.json          written last: the model exists once this exists
    {name}/{version}/files/{path}           every file, any depth

``name`` and ``version`` are percent-encoded into one key segment each (``org/bert`` is
``org%2Fbert``), so a key with exactly three segments ending in ``manifest.json`` is a
manifest and nothing else is. The manifest lists each file's relative POSIX path, size and
SHA-256; a reader trusts nothing else.

Downloads go to a temporary file beside the destination (``.{name}.{pid}-{random}.part``,
see :func:`temp_path`), renamed into place only once verified. A killed process leaves at
most such a file, never a partial destination; the next download into the same place removes
the ones whose process is gone (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote, unquote

from ..errors import IntegrityError

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "ManifestFile", "check_key", "file_key",
           "local_files", "manifest_bytes", "manifest_key", "model_of_key", "parse_manifest",
           "remove_stale_temps", "safe_target", "sha256_file", "temp_path"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "ipfs-accelerate-api/model/1"
#: Bytes read at a time when hashing a local file.
HASH_CHUNK = 1 << 20
#: S3's limit on a key's length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
_TEMP = re.compile(r"^\.(?P<base>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.part$")


@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative, POSIX separators
    size: int
    sha256: str


def check_key(key: Any, what: str = "key") -> str:
    """An object key: a non-empty string of at most 1024 UTF-8 bytes, no control characters."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a string, got {type(key).__name__}")
    if not key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"{what} must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {len(key)} characters")
    if not key.isprintable():
        raise ValueError(f"{what} must not contain control characters: {key!r}")
    return key


def _segment(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or not value.isprintable() or value in (".", ".."):
        raise ValueError(f"model {what} must be a non-empty printable string other than "
                         f"'.' and '..', got {value!r}")
    return quote(value, safe="")


def model_prefix(name: str, version: str) -> str:
    return f"{_segment(name, 'name')}/{_segment(version, 'version')}/"


def manifest_key(name: str, version: str) -> str:
    return model_prefix(name, version) + MANIFEST


def file_key(prefix: str, path: str) -> str:
    return check_key(f"{prefix}files/{path}", f"key for {path!r}")


def model_of_key(key: str) -> tuple[str, str] | None:
    """``(name, version)`` when ``key`` is a model manifest's key, else None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[2] != MANIFEST or not parts[0] or not parts[1]:
        return None
    return unquote(parts[0]), unquote(parts[1])


def local_files(local_dir: str) -> list[tuple[str, str]]:
    """Every regular file under ``local_dir`` as ``(relative POSIX path, absolute path)``,
    sorted; leftovers of interrupted downloads are skipped."""
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"not a directory: {local_dir!r}")
    root = os.path.abspath(local_dir)
    out = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        for f in files:
            full = os.path.join(here, f)
            if _TEMP.match(f) or not os.path.isfile(full):
                continue
            out.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return sorted(out)


def manifest_bytes(name: str, version: str, files: list[ManifestFile]) -> bytes:
    doc = {"format": MANIFEST_FORMAT, "name": name, "version": version,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]}
    return json.dumps(doc, indent=1).encode()


_SHA = re.compile(r"^[0-9a-f]{64}$")


def parse_manifest(data: bytes, key: str) -> tuple[dict[str, Any], list[ManifestFile]]:
    """The manifest document and its files, every field checked; a bad one is an
    :class:`IntegrityError` (a reader trusts the manifest for paths and checksums)."""
    try:
        doc = json.loads(data)
        entries = doc["files"]
        if not isinstance(entries, list):
            raise TypeError("files is not a list")
        files = []
        for e in entries:
            path, size, sha = e["path"], e["size"], e["sha256"]
            if not isinstance(path, str) or isinstance(size, bool) or not isinstance(size, int) \
                    or size < 0 or not isinstance(sha, str) or not _SHA.match(sha):
                raise TypeError(f"bad entry {e!r}")
            files.append(ManifestFile(path, size, sha))
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise IntegrityError(f"s3: manifest {key} is malformed ({exc})", key=key,
                             backend="s3") from None
    if len({f.path for f in files}) != len(files):
        raise IntegrityError(f"s3: manifest {key} lists a path twice", key=key, backend="s3")
    return doc, files


def safe_target(root: str, path: str, key: str) -> str:
    """Where ``path`` (from a manifest) goes under ``root`` (already a real path). A path
    that is absolute, has a drive, a backslash, an empty, ``.`` or ``..`` part, or that
    would land outside ``root`` through a symlink is refused."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or ":" in parts[0] \
            or any(p in ("", ".", "..") for p in parts) or not path.isprintable():
        raise IntegrityError(f"s3: manifest {key} names an unsafe path {path!r} (it must be "
                             "relative and stay inside dest_dir)", key=key, backend="s3")
    target = os.path.join(root, *parts)
    if os.path.commonpath([root, os.path.realpath(target)]) != root:
        raise IntegrityError(f"s3: manifest {key}: {path!r} would be written outside dest_dir "
                             "(through a symlink)", key=key, backend="s3")
    return target


def sha256_file(path: str) -> str:
    """The file's SHA-256, read into one reused buffer (no copy per chunk)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def temp_path(dest: str) -> str:
    """A fresh temporary name beside ``dest`` (same directory, so the rename is atomic)."""
    head, base = os.path.split(dest)
    return os.path.join(head, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.part")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(dest: str) -> int:
    """Remove the temporary files of downloads to ``dest`` whose process has died; returns
    how many. Those of live processes (maybe downloading right now) are left alone."""
    head, base = os.path.split(dest)
    removed = 0
    for name in _names(head or "."):
        m = _TEMP.match(name)
        if m and m["base"] == base and int(m["pid"]) != os.getpid() \
                and not _pid_alive(int(m["pid"])):
            try:
                os.remove(os.path.join(head, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _names(directory: str) -> Iterator[str]:
    try:
        yield from os.listdir(directory)
    except FileNotFoundError:
        return
