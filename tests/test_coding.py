"""Tensor coding rules, checked without a server (prepare_request is pure)."""

import numpy as np
import pytest

from Xclient.client import ModelConfig
from Xclient.client._coding import finish_response, prepare_request
from Xclient.exceptions import BatchingNotSupportedError, XclientValueError


def config(max_batch_size=8, **inputs):
    return ModelConfig.from_dict(
        {
            "name": "m",
            "max_batch_size": max_batch_size,
            "input": [
                {"name": name, "data_type": f"TYPE_{dtype}", "dims": dims, "optional": optional}
                for name, (dtype, dims, optional) in inputs.items()
            ],
            "output": [],
        }
    )


TEXT = config(text=("STRING", [1], False))
NUMS = config(a=("FP32", [-1], False), b=("INT32", [2], True))


def test_infer_sample_adds_the_batch_axis_and_finish_strips_it():
    request = prepare_request(TEXT, (np.array(["你好".encode()], dtype=object),), {}, batch=False)
    assert request.added_batch_axis and request.inputs["text"].shape == (1, 1)
    outputs = finish_response({"y": np.array([[1, 2]])}, request)
    assert outputs["y"].tolist() == [1, 2]


def test_non_batching_model_gets_no_batch_axis():
    model = config(0, x=("FP32", [-1, 2], False))
    request = prepare_request(model, (np.zeros((3, 2), np.float32),), {}, batch=False)
    assert not request.added_batch_axis and request.inputs["x"].shape == (3, 2)
    with pytest.raises(BatchingNotSupportedError, match="max_batch_size 0"):
        prepare_request(model, (np.zeros((1, 3, 2), np.float32),), {}, batch=True)


@pytest.mark.parametrize(
    "value", ["你好", b"\xe4\xbd\xa0\xe5\xa5\xbd", ["你好"], np.array(["你好"]), np.array(["你好".encode()])]
)
def test_text_in_any_form_becomes_utf8_bytes(value):
    request = prepare_request(TEXT, (value,), {}, batch=False)
    array = request.inputs["text"]
    assert array.dtype == object and array.tolist() == [["你好".encode()]]


def test_batch_of_str_becomes_object_array_of_bytes():
    request = prepare_request(TEXT, ([["一"], ["二"]],), {}, batch=True)
    assert request.inputs["text"].tolist() == [["一".encode()], ["二".encode()]]
    assert not request.added_batch_axis


def test_positional_arguments_follow_config_order_and_none_skips_optional():
    request = prepare_request(NUMS, ([1.5], None), {}, batch=False)
    assert list(request.inputs) == ["a"]
    request = prepare_request(NUMS, (), {"b": [1, 2], "a": [0.5]}, batch=False)
    assert list(request.inputs) == ["a", "b"] and request.inputs["b"].dtype == np.int32


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1.0],), {"b": [1, 2]}, "either positionally or by name, not both"),
        (([1.0], [1, 2], [3]), {}, "takes at most 2 inputs"),
        ((), {"c": [1.0]}, "has no input 'c'"),
        ((), {"b": [1, 2]}, "missing required input 'a' FP32 [-1]"),
        (([[1.0]],), {}, "expected shape [-1], got shape [1, 1]"),
        (([1.0], [1, 2, 3]), {}, "expected shape [2], got shape [3]"),
        ((["x"],), {}, "expected numbers (FP32), got an array of dtype <U1"),
        (("x",), {}, "expected numbers (FP32), got str 'x'"),
        (([1.0], [1.5, 2]), {}, "expected integers (INT32)"),
        (([1.0], [float("nan"), 2]), {}, "including NaN"),
        (([1.0], [1, 2**40]), {}, "INT32 values in [-2147483648, 2147483647]"),
        (([1e39],), {}, "that overflow it"),
        (([[1.0], [2.0, 3.0]],), {}, "expected numbers (FP32)"),
    ],
)
def test_bad_input_names_model_input_expected_and_given(args, kwargs, message):
    with pytest.raises(XclientValueError) as info:
        prepare_request(NUMS, args, kwargs, batch=False)
    assert message in str(info.value)
    assert "'m'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_lossless_casts_are_made():
    model = config(x=("INT8", [-1], False), f=("FP16", [-1], True), flag=("BOOL", [-1], True))
    request = prepare_request(model, (), {"x": [1, -2], "f": [0.5, 2], "flag": [0, 1]}, batch=False)
    assert request.inputs["x"].dtype == np.int8 and request.inputs["x"].tolist() == [[1, -2]]
    assert request.inputs["f"].dtype == np.float16 and request.inputs["flag"].dtype == np.bool_
    assert request.inputs["flag"].tolist() == [[False, True]]
    with pytest.raises(XclientValueError, match="BOOL"):
        prepare_request(model, (), {"x": [1], "flag": [2]}, batch=False)
    with pytest.raises(XclientValueError, match="exactly representable as FP16"):
        prepare_request(model, (), {"x": [1], "f": [2049]}, batch=False)


def test_bytes_input_refuses_non_text_elements_naming_the_index():
    with pytest.raises(XclientValueError, match=r"got int 3 at \[1, 0\]"):
        prepare_request(TEXT, ([["a"], [3]],), {}, batch=True)
    with pytest.raises(XclientValueError, match="expected text"):
        prepare_request(TEXT, (np.array([1.0]),), {}, batch=False)


def test_batch_is_checked_against_max_batch_size_and_consistency():
    with pytest.raises(XclientValueError, match="exceeds the model's max_batch_size 8"):
        prepare_request(TEXT, ([["x"]] * 9,), {}, batch=True)
    with pytest.raises(XclientValueError, match="empty batch"):
        prepare_request(TEXT, (np.zeros((0, 1), dtype=object),), {}, batch=True)
    with pytest.raises(XclientValueError, match="a batch of 2 rows like input 'a'"):
        prepare_request(NUMS, (np.zeros((2, 1)), np.zeros((3, 2))), {}, batch=True)
    with pytest.raises(XclientValueError, match="use infer_batch"):
        prepare_request(TEXT, ([["x"], ["y"]],), {}, batch=False)


def test_scalar_is_accepted_for_a_one_element_input():
    request = prepare_request(NUMS, (2.5,), {}, batch=False)
    assert request.inputs["a"].tolist() == [[2.5]]


def test_no_input_at_all_is_refused():
    model = config(x=("FP32", [-1], True))
    with pytest.raises(XclientValueError, match="no input given"):
        prepare_request(model, (), {}, batch=False)
