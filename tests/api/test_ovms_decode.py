"""The OVMS adapter's infer path without a server: decoding JSON tensors (type checks, nesting,
values beyond a float type's range), datatypes of numpy arrays, and the per-model facts
(input names, whether calls may be combined) that follow the metadata when it is read again."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ipfs_accelerate_api import backend
from ipfs_accelerate_api.backends.ovms import datatype_of, decode_infer_response
from ipfs_accelerate_api.errors import ResponseFormatError


def _answer(datatype: str, shape: list[int], data) -> bytes:
    return json.dumps({"model_name": "m", "outputs": [
        {"name": "y", "datatype": datatype, "shape": shape, "data": data}]}).encode()


def decode(datatype: str, shape: list[int], data) -> np.ndarray:
    return decode_infer_response(_answer(datatype, shape, data), None)["outputs"]["y"]


@pytest.mark.parametrize("n", [4, 200])  # checked element by element, and under numpy's switch
@pytest.mark.parametrize("datatype", ["FP16", "FP32"])
def test_a_value_beyond_the_float_range_is_infinity_without_a_warning(n, datatype) -> None:
    data = [1.0] * (n - 2) + [1e300, -1e300]  # warnings are errors in this suite
    out = decode(datatype, [n], data)
    assert out.dtype == {"FP16": np.float16, "FP32": np.float32}[datatype]
    assert out[-2] == np.inf and out[-1] == -np.inf and out[0] == 1.0


def test_nan_and_infinity_in_json() -> None:
    out = decode_infer_response(b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [3],'
                                b' "data": [NaN, Infinity, 1e39]}]}', None)["outputs"]["y"]
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == np.inf


def test_nested_data_and_shapes() -> None:
    out = decode("INT32", [2, 2], [[1, 2], [3, 4]])
    assert out.shape == (2, 2) and out.dtype == np.int32 and out.tolist() == [[1, 2], [3, 4]]
    assert decode("FP64", [1, 2], [[1, 2.5]]).tolist() == [[1.0, 2.5]]
    assert decode("FP32", [], [7]).shape == ()
    assert decode("BOOL", [0], []).shape == (0,)


@pytest.mark.parametrize("datatype, data, problem", [
    ("FP32", [1.0, True], "numbers"),
    ("FP32", [1.0, "2"], "numbers"),
    ("FP32", [1.0, None], "numbers"),
    ("INT32", [1, 2.0], "integers"),
    ("INT32", [1, False], "integers"),
    ("INT8", [1, 300], "out of range"),
    ("BOOL", [True, 1], "booleans"),
    ("FP32", [[1.0], [2.0, 3.0]], "elements"),
    ("FP32", [1.0], "elements"),
])
def test_bad_tensor_data_is_a_format_error(datatype, data, problem) -> None:
    with pytest.raises(ResponseFormatError, match=problem):
        decode(datatype, [2], data)


def test_data_nested_too_deeply() -> None:
    deep: list = [1.0]
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ResponseFormatError, match="deeply"):
        decode("FP32", [1], deep)


@pytest.mark.parametrize("dtype, datatype", [
    ("<f4", "FP32"), (">f4", "FP32"), ("<f2", "FP16"), ("f8", "FP64"), ("u1", "UINT8"),
    (">i8", "INT64"), ("?", "BOOL"), ("O", "BYTES"), ("U3", "BYTES"), ("S2", "BYTES"),
])
def test_datatypes_of_numpy_arrays(dtype, datatype) -> None:
    assert datatype_of(np.zeros(2, dtype=dtype)) == datatype
    assert datatype_of(np.zeros(2, dtype=dtype)) == datatype  # the remembered answer


def test_no_datatype_for_complex_numbers() -> None:
    with pytest.raises(TypeError, match="complex"):
        datatype_of(np.zeros(2, dtype=complex))


def _meta(first: int) -> dict:
    return {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [first, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [first, 4]}]}


def test_the_batch_verdict_follows_the_metadata_when_read_again() -> None:
    b = backend("ovms", base_url="http://127.0.0.1:9")  # nothing is sent here
    try:
        x = {"x": np.zeros((1, 4), np.float32)}
        b._metadata.set(("m", None), _meta(-1))
        assert b._batch_group("m", None, x, None, None) is not None
        assert b._input_names("m", None) == ["x"]
        b._metadata.set(("m", None), _meta(1))  # what model_metadata() does when it reads again
        assert b._batch_group("m", None, x, None, None) is None
        b._metadata.set(("m", None), _meta(-1))
        assert b._batch_group("m", None, {"z": x["x"]}, None, None) is None  # not its inputs
        assert b._batch_group("m", None, {"x": np.zeros(4, np.float32)}, None, None) is not None
        assert b._batch_group("m", None, {"x": np.float32(1)}, None, None) is None  # no rows
    finally:
        b.close()


def test_the_infer_path_is_quoted() -> None:
    b = backend("ovms", base_url="http://127.0.0.1:9")
    try:
        assert b._infer_path("a/b c", None) == "/v2/models/a%2Fb%20c/infer"
        assert b._infer_path("m", 2) == b._infer_path("m", "2") == "/v2/models/m/versions/2/infer"
        with pytest.raises(ValueError, match="version"):
            b._infer_path("m", True)
        with pytest.raises(ValueError, match="version"):
            b._infer_path("m", [1])
    finally:
        b.close()
