"""Models: files first and the manifest last, complete-or-absent, verified and resumable
downloads, and manifests that try to write outside ``dest_dir``."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ipfs_accelerate_api.errors import IntegrityError, NotFoundError, PermissionDeniedError

from .conftest import write_model

FILES = {
    "config.json": b'{"hidden": 384}',
    "manifest.json": b"the model's own manifest.json, not ours",
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "weights/part-0.bin": os.urandom(200_000),
    "weights/part-1.bin": os.urandom(3000),
}


def _read_tree(root) -> dict[str, bytes]:
    out = {}
    for here, _, files in os.walk(root):
        for f in files:
            full = os.path.join(here, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, root).replace(os.sep, "/")] = fh.read()
    return out


def _gets(s3) -> int:
    return s3.stats()["endpoints"][0]["requests_by_operation"].get("GetObject", 0)


def test_put_get_list_delete(make, tmp_path) -> None:
    src = tmp_path / "src"
    write_model(src, FILES)
    s3 = make()
    manifest = s3.put_model(src, "org/mini-lm", "v1")
    assert manifest["name"] == "org/mini-lm" and manifest["version"] == "v1"
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        p: (len(d), hashlib.sha256(d).hexdigest()) for p, d in FILES.items()}
    s3.put_model(src, "org/mini-lm", "v2")
    s3.put_model(src, "other", "1.0")
    assert s3.list_models() == [("org/mini-lm", "v1"), ("org/mini-lm", "v2"), ("other", "1.0")]
    dest = tmp_path / "dest"
    assert s3.get_model("org/mini-lm", "v1", dest) == manifest
    assert _read_tree(dest) == FILES
    s3.delete_model("org/mini-lm", "v1")
    assert s3.list_models() == [("org/mini-lm", "v2"), ("other", "1.0")]
    assert [o.key for o in s3.list("org%2Fmini-lm/v1/")] == []
    with pytest.raises(NotFoundError):
        s3.get_model("org/mini-lm", "v1", tmp_path / "again")


def test_the_manifest_is_written_last(make, proxy, bucket, tmp_path) -> None:
    write_model(tmp_path, FILES)
    s3 = make(endpoint_url=proxy.url)
    s3.put_model(tmp_path, "m", "v1")
    puts = [path for method, path in proxy.log if method == "PUT"]
    assert puts[-1] == f"/{bucket}/m/v1/manifest.json"
    assert len(puts) == len(FILES) + 1


def test_a_failed_upload_leaves_no_model(make, proxy, tmp_path) -> None:
    """One file is refused: the version has no manifest, so it is not listed and cannot be
    fetched, though its other files were stored."""
    write_model(tmp_path / "src", FILES)
    proxy.add(method="PUT", path=r"/files/tokenizer/vocab\.txt$", status=403, code="AccessDenied")
    s3 = make(endpoint_url=proxy.url)
    with pytest.raises(PermissionDeniedError):
        s3.put_model(tmp_path / "src", "m", "v1")
    assert s3.list_models() == []
    assert any(o.key.endswith("config.json") for o in s3.list("m/v1/"))
    with pytest.raises(NotFoundError):
        s3.get_model("m", "v1", tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or os.listdir(tmp_path / "dest") == []


def test_putting_a_version_again_replaces_it(make, tmp_path) -> None:
    write_model(tmp_path / "a", {"keep.txt": b"1", "gone.txt": b"2"})
    write_model(tmp_path / "b", {"keep.txt": b"new", "added.txt": b"3"})
    s3 = make()
    s3.put_model(tmp_path / "a", "m", "v1")
    s3.put_model(tmp_path / "b", "m", "v1")
    assert sorted(o.key for o in s3.list("m/v1/")) == [
        "m/v1/files/added.txt", "m/v1/files/keep.txt", "m/v1/manifest.json"]
    s3.get_model("m", "v1", tmp_path / "dest")
    assert _read_tree(tmp_path / "dest") == {"keep.txt": b"new", "added.txt": b"3"}


def test_get_model_skips_files_already_there_and_verified(make, tmp_path) -> None:
    write_model(tmp_path / "src", FILES)
    s3 = make()
    s3.put_model(tmp_path / "src", "m", "v1")
    dest = tmp_path / "dest"
    s3.get_model("m", "v1", dest)
    before = _gets(s3)
    s3.get_model("m", "v1", dest)
    assert _gets(s3) - before == 1  # the manifest only
    (dest / "weights" / "part-1.bin").write_bytes(b"damaged")  # wrong content
    (dest / "config.json").unlink()  # missing
    before = _gets(s3)
    s3.get_model("m", "v1", dest)
    assert _gets(s3) - before == 3  # the manifest and the two files
    assert _read_tree(dest) == FILES


def test_a_corrupt_model_file_is_refused(make, raw, bucket, tmp_path) -> None:
    write_model(tmp_path / "src", FILES)
    s3 = make()
    s3.put_model(tmp_path / "src", "m", "v1")
    key = "m/v1/files/config.json"
    meta = raw.head_object(Bucket=bucket, Key=key)["Metadata"]
    raw.put_object(Bucket=bucket, Key=key, Body=b'{"hidden": 385}', Metadata=meta)
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as info:
        s3.get_model("m", "v1", dest)
    assert info.value.key == key
    assert not (dest / "config.json").exists()
    got = _read_tree(dest)
    assert got == {p: d for p, d in FILES.items() if p != "config.json"}  # the rest is fine


def _hostile_manifest(raw, bucket: str, paths: list[str]) -> None:
    doc = json.dumps({"files": [{"path": p, "size": 1,
                                 "sha256": hashlib.sha256(b"x").hexdigest()} for p in paths]})
    body = doc.encode()
    raw.put_object(Bucket=bucket, Key="evil/v1/manifest.json", Body=body,
                   Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    for p in paths:
        raw.put_object(Bucket=bucket, Key=f"evil/v1/files/{p}", Body=b"x",
                       Metadata={"sha256": hashlib.sha256(b"x").hexdigest()})


@pytest.mark.parametrize("path", ["../escaped", "/tmp/absolute", "a/../../escaped", "a/./b",
                                  "a\\..\\escaped", "", "C:/windows"])
def test_a_manifest_path_outside_dest_dir_is_refused(make, raw, bucket, tmp_path, path) -> None:
    _hostile_manifest(raw, bucket, ["fine.txt", path])
    s3 = make()
    dest = tmp_path / "inner" / "dest"
    with pytest.raises(IntegrityError, match="unsafe path"):
        s3.get_model("evil", "v1", dest)
    assert os.listdir(tmp_path) == []  # nothing written anywhere, not even dest_dir


def test_a_symlink_inside_dest_dir_cannot_lead_outside(make, raw, bucket, tmp_path) -> None:
    _hostile_manifest(raw, bucket, ["link/escaped"])
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(IntegrityError, match="outside dest_dir"):
        make().get_model("evil", "v1", dest)
    assert os.listdir(outside) == []


def test_model_arguments_are_checked(make, tmp_path) -> None:
    s3 = make()
    with pytest.raises(FileNotFoundError):
        s3.put_model(tmp_path / "absent", "m", "v1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        s3.put_model(tmp_path / "empty", "m", "v1")
    for name, version in (("", "v1"), ("m", ".."), ("m", "a\nb"), (3, "v1")):
        with pytest.raises(ValueError):
            s3.get_model(name, version, tmp_path / "d")
