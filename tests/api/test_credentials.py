"""Credentials: the Secret wrapper, where keys are found (arguments, environment, the file),
the shapes a credentials-file entry may take, and the errors for a bad file."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest

from ipfs_accelerate_api.config import Credentials, Secret, resolve_credentials
from ipfs_accelerate_api.errors import ConfigurationError


def revealed(creds) -> list[str]:
    return [k.reveal() for k in creds.keys]


@pytest.fixture
def cred_file(tmp_path):
    """Write a credentials file (mode 600) and return the env pointing at it."""
    path = tmp_path / "creds.json"

    def write(content, mode: int = 0o600) -> dict[str, str]:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        os.chmod(path, mode)
        return {"IPFS_ACCEL_CREDENTIALS": str(path)}

    write.path = path
    return write


def resolve(env, **kw):
    return resolve_credentials("openai", "OPENAI", env=env, **kw)


# -- Secret -------------------------------------------------------------------------------

def test_secrets_compare_and_hash_by_value() -> None:
    a, same, other = Secret("sk-1", "a"), Secret("sk-1", "b"), Secret("sk-2", "a")
    assert a == same and hash(a) == hash(same)
    assert a != other
    assert a != "sk-1"  # never equal to the bare string
    assert len({a, same, other}) == 2
    assert {a: 1}[same] == 1


def test_a_secret_is_trimmed_and_labelled() -> None:
    s = Secret("  sk-1\n", "openai-key-1")
    assert s.reveal() == "sk-1" and s == Secret("sk-1")
    assert s.label == "openai-key-1" and Secret("sk-1").label == "key"
    assert repr(s) == str(s) == "<Secret openai-key-1>"


@pytest.mark.parametrize("value", ["", "   ", None, 42, b"sk-1"])
def test_a_secret_must_be_a_non_empty_string(value) -> None:
    with pytest.raises(ConfigurationError, match="non-empty string"):
        Secret(value)  # type: ignore[arg-type]


def test_a_secret_has_no_instance_dict_to_dump() -> None:
    s = Secret("sk-1")
    with pytest.raises(TypeError):
        vars(s)
    with pytest.raises(AttributeError):
        s.extra = 1  # type: ignore[attr-defined]


def test_credentials_are_a_frozen_value() -> None:
    c = Credentials()
    assert c == Credentials(keys=(), base_url=None, source="none")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.source = "x"  # type: ignore[misc]


def test_a_secret_is_not_picklable() -> None:
    with pytest.raises(TypeError, match="picklable"):
        pickle.dumps(Secret("sk-1"))


# -- where the keys come from -------------------------------------------------------------

def test_arguments_come_first_and_are_reported(cred_file) -> None:
    env = {"OPENAI_API_KEY": "sk-env", **cred_file({"openai": "sk-file"})}
    c = resolve(env, api_keys=["sk-a", "sk-b"], api_key="sk-single")
    assert revealed(c) == ["sk-a", "sk-b"] and c.source == "arguments"
    c = resolve(env, api_key="sk-single")
    assert revealed(c) == ["sk-single"] and c.source == "arguments"
    assert [k.label for k in c.keys] == ["openai-key-1"]


def test_environment_comes_before_the_file(cred_file) -> None:
    env = {"OPENAI_API_KEY": "sk-env", **cred_file({"openai": "sk-file"})}
    c = resolve(env)
    assert revealed(c) == ["sk-env"] and c.source == "environment" and c.base_url is None


@pytest.mark.parametrize("env, keys", [
    ({"OPENAI_API_KEYS": "k1, k2,,k3 "}, ["k1", "k2", "k3"]),
    ({"OPENAI_API_KEYS": "   ", "OPENAI_API_KEY": "z"}, ["z"]),
    ({"OPENAI_API_KEYS": "k1", "OPENAI_API_KEY_1": "n1", "OPENAI_API_KEY": "z"}, ["k1"]),
    ({"OPENAI_API_KEY_1": "n1", "OPENAI_API_KEY_2": " n2 ", "OPENAI_API_KEY": "z"}, ["n1", "n2"]),
    ({"OPENAI_API_KEY_1": "n1", "OPENAI_API_KEY_3": "n3"}, ["n1"]),  # numbering stops at a gap
    ({"OPENAI_API_KEY_2": "n2", "OPENAI_API_KEY": "z"}, ["z"]),  # ... and starts at 1
    ({"OPENAI_API_KEY_1": " ", "OPENAI_API_KEY": "z"}, ["z"]),
    ({"OPENAI_API_KEY": " z "}, ["z"]),
])
def test_environment_variables(env, keys) -> None:
    c = resolve(env)
    assert revealed(c) == keys and c.source == "environment"
    assert [k.label for k in c.keys] == [f"openai-key-{i}" for i in range(1, len(keys) + 1)]


@pytest.mark.parametrize("entry, keys, base_url", [
    ("sk-plain", ["sk-plain"], None),
    (["sk-1", "sk-2"], ["sk-1", "sk-2"], None),
    ({"api_key": "sk-one"}, ["sk-one"], None),
    ({"api_keys": ["sk-1", "sk-2"], "base_url": "http://h/v1"}, ["sk-1", "sk-2"], "http://h/v1"),
    ({"api_keys": ["sk-many"], "api_key": "sk-one"}, ["sk-many"], None),
    ({"api_key": "sk-one", "base_url": "http://h/v1"}, ["sk-one"], "http://h/v1"),
])
def test_credentials_file_entries(cred_file, entry, keys, base_url) -> None:
    env = cred_file({"openai": entry, "other": "sk-not-mine"})
    c = resolve(env)
    assert revealed(c) == keys and c.base_url == base_url
    assert c.source == str(cred_file.path)


def test_an_entry_with_only_a_base_url_has_no_keys(cred_file) -> None:
    env = cred_file({"openai": {"base_url": "http://h/v1"}})
    c = resolve(env, required=False)
    assert c.keys == () and c.base_url == "http://h/v1"
    with pytest.raises(ConfigurationError, match="no API key for openai"):
        resolve(env)


def test_the_default_file_is_in_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / ".ipfs_api_credentials"
    path.write_text(json.dumps({"openai": "sk-home"}))
    os.chmod(path, 0o600)
    c = resolve({})
    assert revealed(c) == ["sk-home"] and c.source == str(path)


def test_nothing_found(cred_file, tmp_path) -> None:
    env = cred_file({"other": "sk-x"})
    with pytest.raises(ConfigurationError) as info:
        resolve(env)
    for hint in ("no API key for openai", "OPENAI_API_KEY", "OPENAI_API_KEYS", "api_key="):
        assert hint in str(info.value)
    c = resolve({"IPFS_ACCEL_CREDENTIALS": str(tmp_path / "missing.json")}, required=False)
    assert (c.keys, c.base_url, c.source) == ((), None, "none")


# -- a bad file is a clear error ----------------------------------------------------------

@pytest.mark.parametrize("content, match", [
    ("{not json", "cannot read credentials file"),
    ("[1, 2]", "must hold a JSON object"),
    ('"sk-1"', "must hold a JSON object"),
    ({"openai": 42}, "entry 'openai' has an unknown shape"),
    ({"openai": True}, "unknown shape"),
])
def test_bad_credentials_files(cred_file, content, match) -> None:
    env = cred_file(content)
    with pytest.raises(ConfigurationError, match=match) as info:
        resolve(env)
    assert str(cred_file.path) in str(info.value)


def test_an_unreadable_credentials_file(tmp_path) -> None:
    path = tmp_path / "creds"
    path.mkdir(mode=0o700)  # exists, private, but cannot be read as a file
    with pytest.raises(ConfigurationError, match="cannot read credentials file"):
        resolve({"IPFS_ACCEL_CREDENTIALS": str(path)})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o610])
def test_a_file_others_can_touch_is_refused(cred_file, mode) -> None:
    env = cred_file({"openai": "sk-1"}, mode)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        resolve(env)
