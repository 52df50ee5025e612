"""Tensor coding under arbitrary input: property-based tests (hypothesis) against the real echo models, and
bad input refused before anything is sent, by every one of the five clients.

- Every dtype and shape round-trips through ``identity`` (batching) and ``identity_nobatch`` on both
  protocols: what comes back is what was sent (NaN, infinities, extremes, empty tensors, any bytes).
- BYTES inputs take ``bytes`` as they are, UTF-8 or not (a tokenizer's output, an image): raw bytes are
  legitimate. ``str`` is sent as UTF-8, so a ``str`` that has no UTF-8 form (a lone surrogate, as
  ``os.fsdecode`` makes of undecodable bytes) is refused. Decoding text is the text layers' business.
- Any object given for a BYTES input either becomes a valid BYTES tensor (every element ``bytes``) or is
  refused with XclientValueError: a malformed BYTES tensor, which can crash a Python-backend model on the
  server, is never sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from Xclient.client import ModelClient, ModelConfig
from Xclient.client._coding import prepare_request
from Xclient.client._grpc_wire import build_request
from Xclient.exceptions import ServerUnavailableError, XclientValueError

from . import test_model_client
from .drivers import Driver, every_client

#: Each Triton dtype of the echo models' inputs, as numpy has it (BYTES: object arrays).
DTYPES: dict[str, np.dtype] = {name: np.dtype(dtype) for name, dtype in test_model_client.DTYPES.items()}
#: Few examples per protocol, so the file stays quick: each is a real request.
ROUND_TRIP = settings(
    max_examples=25,
    deadline=None,  # a loaded machine
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Pure functions: many examples are cheap.
PURE = settings(max_examples=300, deadline=None, database=None)

# -- strategies ------------------------------------------------------------------------------------


def bytes_elements() -> st.SearchStrategy[Any]:
    """What a BYTES tensor may hold: any bytes, and any str that UTF-8 can encode (hypothesis's text
    excludes lone surrogates)."""
    return st.one_of(st.binary(max_size=12), st.text(max_size=6))


def values_of(name: str, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """An array of the input's dtype and this shape: NaN, infinities and the extremes included."""
    if name == "BYTES":
        count = int(np.prod(shape))
        return st.lists(bytes_elements(), min_size=count, max_size=count).map(
            lambda items: np.array(items + [None], dtype=object)[:-1].reshape(shape)  # None: keep 1-D object
        )
    return hnp.arrays(DTYPES[name], shape)


@st.composite
def requests(draw: st.DrawFn, *, batching: bool) -> tuple[bool, dict[str, np.ndarray]]:
    """Inputs for the echo model: 1 to 3 of its 13 inputs, for infer_sample or (when it batches) infer_batch."""
    names = draw(st.lists(st.sampled_from(sorted(DTYPES)), min_size=1, max_size=3, unique=True))
    if batching:
        batch = draw(st.booleans())
        rows = draw(st.integers(1, 8))  # the model's max_batch_size is 8
        shapes = [((rows,) if batch else ()) + (draw(st.integers(0, 5)),) for _ in names]
    else:
        batch = False
        shapes = [tuple(draw(st.lists(st.integers(0, 4), min_size=2, max_size=2))) for _ in names]
    return batch, {name: draw(values_of(name, shape)) for name, shape in zip(names, shapes, strict=True)}


def expected_echo(array: np.ndarray) -> list[Any]:
    if array.dtype == object:  # str comes back as its UTF-8 bytes
        return np.vectorize(lambda x: x.encode() if isinstance(x, str) else x, otypes=[object])(array).tolist()
    return array.tolist()


# -- round trips through the real echo models ------------------------------------------------------


@pytest.fixture(scope="module")
def echo_clients(triton_server) -> Iterator[dict[tuple[str, str], ModelClient]]:
    clients = {
        (protocol, model): ModelClient(triton_server.url(protocol), model)
        for protocol in ("http", "grpc")
        for model in ("identity", "identity_nobatch")
    }
    yield clients
    for client in clients.values():
        client.close()


def assert_round_trip(client: ModelClient, batch: bool, inputs: dict[str, np.ndarray]) -> None:
    outputs = (client.infer_batch if batch else client.infer_sample)(**inputs)
    assert sorted(outputs) == sorted(f"OUT_{name}" for name in inputs)
    for name, sent in inputs.items():
        echoed = outputs[f"OUT_{name}"]
        assert echoed.dtype == DTYPES[name] and echoed.shape == sent.shape, name
        if name == "BYTES":
            assert echoed.tolist() == expected_echo(sent)
        else:
            np.testing.assert_array_equal(echoed, sent, strict=True)  # NaN equals NaN here; bit-exact otherwise


@ROUND_TRIP
@given(request=requests(batching=True))
def test_every_dtype_and_shape_round_trips_through_the_batching_echo_model(echo_clients, protocol, request):
    assert_round_trip(echo_clients[protocol, "identity"], *request)


@ROUND_TRIP
@given(request=requests(batching=False))
def test_every_dtype_and_shape_round_trips_through_the_non_batching_echo_model(echo_clients, protocol, request):
    assert_round_trip(echo_clients[protocol, "identity_nobatch"], *request)


def test_raw_bytes_that_are_not_utf8_are_legitimate_bytes_input(echo_clients, protocol):
    raw = [b"\xff\xfe\x00", "中文".encode("gbk"), b"", "é".encode()]
    assert echo_clients[protocol, "identity"].infer_sample(BYTES=raw)["OUT_BYTES"].tolist() == raw


# -- a malformed BYTES tensor is never sent ---------------------------------------------------------

IDENTITY = ModelConfig.from_dict(
    {
        "name": "identity",
        "max_batch_size": 8,
        "input": [
            {"name": name, "data_type": f"TYPE_{'STRING' if name == 'BYTES' else name}", "dims": [-1], "optional": True}
            for name in DTYPES
        ],
        "output": [],
    }
)


def anything() -> st.SearchStrategy[Any]:
    """Arbitrary Python and numpy values, nested: what a caller might pass for a BYTES input."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.complex_numbers(),
        st.text(max_size=4),
        st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates
        st.binary(max_size=4),
        st.binary(max_size=4).map(bytearray),
        st.binary(max_size=4).map(memoryview),
        st.builds(object),
        st.sampled_from([np.float32(1.5), np.int64(3), np.str_("字"), np.bytes_(b"x"), np.nan]),
    )
    arrays = st.one_of(
        hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
        hnp.arrays(hnp.byte_string_dtypes(max_len=3), hnp.array_shapes(max_dims=2, max_side=3)),
        hnp.arrays(hnp.unicode_string_dtypes(max_len=3), hnp.array_shapes(max_dims=2, max_side=3)),
    )
    nested = st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.tuples(children, children),
            st.dictionaries(st.text(max_size=2), children, max_size=2),
            st.lists(children, min_size=1, max_size=3).map(lambda items: np.array(items + [None], dtype=object)[:-1]),
        ),
        max_leaves=6,
    )
    return st.one_of(nested, arrays)


@PURE
@given(value=anything())
def test_any_object_for_a_bytes_input_becomes_a_valid_bytes_tensor_or_is_refused(value):
    try:
        request = prepare_request(IDENTITY, (), {"BYTES": value}, batch=False)
    except XclientValueError as e:
        assert e.input in ("BYTES", None) and e.model == "identity"  # named, never a crash deep inside
        return
    tensor = request.inputs["BYTES"]
    assert tensor.dtype == object and all(type(item) is bytes or isinstance(item, bytes) for item in tensor.flat)
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    if tensor.size:  # what both protocols put on the wire parses back to the same elements
        assert deserialize_bytes_tensor(serialize_byte_tensor(tensor).item()).tolist() == tensor.reshape(-1).tolist()
    message = build_request("identity", "", request.inputs, None)  # what gRPC sends, unary and streams alike
    assert [i.datatype for i in message.inputs] == ["BYTES"] and list(message.inputs[0].shape) == list(tensor.shape)
    assert message.raw_input_contents[0] == (serialize_byte_tensor(tensor).item() if tensor.size else b"")


@PURE
@given(value=anything(), name=st.sampled_from(sorted(set(DTYPES) - {"BYTES"})))
def test_any_object_for_a_numeric_input_becomes_that_dtype_or_is_refused(value, name):
    try:
        request = prepare_request(IDENTITY, (), {name: value}, batch=False)
    except XclientValueError as e:
        assert e.input in (name, None) and e.model == "identity"
        return
    assert request.inputs[name].dtype == DTYPES[name]


# -- bad input is refused before anything is sent, by every client -----------------------------------

#: A model with a required number, a required integer and optional text; batches of up to 4.
CONFIG = {
    "name": "checked",
    "max_batch_size": 4,
    "input": [
        {"name": "a", "data_type": "TYPE_FP32", "dims": [-1]},
        {"name": "n", "data_type": "TYPE_INT32", "dims": [1]},
        {"name": "text", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    ],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [-1]}],
}
GOOD = {"a": [1.0], "n": 1}
BAD_INPUT = {
    "wrong dtype": (({"a": ["one"], "n": 1},), "expected numbers (FP32), got an array of dtype <U3"),
    "wrong shape": (({"a": [[1.0]], "n": 1},), "expected shape [-1], got shape [1, 1]"),
    "missing input": (({"a": [1.0]},), "missing required input 'n' INT32 [1]"),
    "unknown input": (({**GOOD, "b": [1.0]},), "has no input 'b'"),
    "mixed args": ((([1.0],), {"n": 1}), "not both"),
    "too many positional args": ((([1.0], 1, "x", "y"), {}), "takes at most 3 inputs"),
    "text with no UTF-8": (({**GOOD, "text": "\udcff"},), "expected text that UTF-8 can encode"),
    "not text": (({**GOOD, "text": [3]},), "expected text (str or bytes) in every element, got int 3"),
    "NaN for an integer": (({"a": [1.0], "n": float("nan")},), "expected integers (INT32), got float64 values"),
    "fraction for an integer": (({"a": [1.0], "n": 1.5},), "with a fractional or infinite part"),
    "overflow": (({"a": [1.0], "n": 2**40},), "INT32 values in [-2147483648, 2147483647]"),
    "batch too large": (({"a": [[1.0]] * 5, "n": [[1]] * 5}, "batch"), "exceeds the model's max_batch_size 4"),
}


def call_of(case: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any], bool]:
    """(positional args, named args, batch) from a BAD_INPUT case."""
    if isinstance(case[0], tuple):
        return case[0], case[1], False
    return (), case[0], len(case) > 1


@every_client
def test_bad_input_is_refused_by_every_client_before_anything_is_sent(dead_url, kind):
    # The config is given and nothing listens at the URL: a request sent would fail with
    # ServerUnavailableError, so each XclientValueError proves that nothing was sent.
    decoupled = kind.endswith("DecoupledModelClient")
    config = {**CONFIG, "model_transaction_policy": {"decoupled": True}} if decoupled else CONFIG
    driver = Driver(kind, dead_url, "checked", model_config=config, ensure_model_is_ready=False)
    for what, (case, message) in BAD_INPUT.items():
        args, kwargs, batch = call_of(case)
        with pytest.raises(XclientValueError) as info:
            driver.infer(*args, batch=batch, **kwargs)
        assert message in str(info.value) and "'checked'" in str(info.value), what
    with pytest.raises(ServerUnavailableError):  # the same client, given good input, does send
        driver.infer(**GOOD)
    driver.close()


@pytest.mark.parametrize("value", [np.bytes_("字".encode()), [np.bytes_(b"x"), b"y"]], ids=["scalar", "list"])
def test_numpy_bytes_scalars_go_as_their_bytes_not_their_repr(value):
    """``numpy.bytes_`` is a bytes subclass; tritonclient's serializer (type(x) is bytes) would send its str()."""
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    tensor = prepare_request(IDENTITY, (), {"BYTES": value}, batch=False).inputs["BYTES"]
    expected = [bytes(v) for v in (value if isinstance(value, list) else [value])]
    assert deserialize_bytes_tensor(serialize_byte_tensor(tensor).item()).tolist() == expected
    assert all(type(item) is bytes for item in tensor.flat)
