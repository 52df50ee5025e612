"""Tensor coding: call arguments -> named numpy arrays for the request, and outputs back.

Every client, sync or async, goes through :func:`prepare_request` and :func:`finish_response`;
each rule (argument mapping, dtype casts, shapes, the batch axis) lives here once. All checks
run before anything is sent, and their errors name the model, the input, what was expected
and what was given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..exceptions import BatchingNotSupportedError, XclientValueError
from ._config import OBJECT_DTYPE as _OBJECT
from ._config import ModelConfig, RequestInputs, TensorSpec

#: Request parameters Triton keeps for itself (the server refuses a request that sets one), and the
#: prefix of its own (``triton_enable_empty_final_response``, ...): :func:`check_parameters` refuses them
#: before anything is sent. Not every tritonclient version Xclient supports exports this list, hence ours.
RESERVED_PARAMETERS = frozenset(
    ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers", "binary_data_output")
)
RESERVED_PREFIX = "triton_"
#: The types a request parameter may have (Triton's bool, int64, double and string parameters).
ParameterValue = str | bool | int | float
_INT64 = (-(2**63), 2**63 - 1)


@dataclasses.dataclass(frozen=True)
class PreparedRequest:
    """Arrays ready to send, keyed by input name in config order."""

    inputs: dict[str, np.ndarray[Any, Any]]
    added_batch_axis: bool


def prepare_request(
    config: ModelConfig, args: Sequence[Any], kwargs: Mapping[str, Any], *, batch: bool
) -> PreparedRequest:
    """Check and code the arguments of ``infer_sample`` (``batch=False``) or ``infer_batch``."""
    if batch and not config.batching:
        raise BatchingNotSupportedError(
            f"Model {config.name!r} does not support batching (max_batch_size 0): "
            "call infer_sample with the full shape instead of infer_batch",
            model=config.name,
        )
    values = map_arguments(config, args, kwargs)
    add_axis = config.batching and not batch
    arrays = RequestInputs(config.plan)
    batch_size: tuple[str, int] | None = None
    for spec in config.inputs:
        if spec.name not in values:
            continue
        array = _check_shape(config, spec, coerce(config, spec, values[spec.name]), batch=batch)
        if add_axis:
            array = array[np.newaxis, ...]
        elif batch:
            size = array.shape[0]
            if batch_size is not None and batch_size[1] != size:
                raise _error(
                    config, spec, f"a batch of {batch_size[1]} rows like input {batch_size[0]!r}", f"{size} rows"
                )
            batch_size = (spec.name, size)
        arrays[spec.name] = array
    if batch_size is not None:
        size = batch_size[1]
        if size == 0:
            raise XclientValueError(f"Model {config.name!r}: infer_batch was given an empty batch", model=config.name)
        if size > config.max_batch_size:
            raise XclientValueError(
                f"Model {config.name!r}: a batch of {size} rows exceeds the model's max_batch_size "
                f"{config.max_batch_size}; split it into batches of at most {config.max_batch_size}",
                model=config.name,
            )
    if not arrays:
        raise XclientValueError(
            f"Model {config.name!r}: no input given; the model's inputs are {_names(config.inputs)}",
            model=config.name,
        )
    return PreparedRequest(inputs=arrays, added_batch_axis=add_axis)


def check_parameters(parameters: Mapping[str, Any] | None) -> Mapping[str, ParameterValue]:
    """The request parameters to send, checked: the one rule for every client and both protocols.

    Names are str and not Triton's (:data:`RESERVED_PARAMETERS`, the ``triton_`` prefix); values are
    str, bool, int (int64) or float. Errors name the parameter and what was given."""
    if not parameters:
        return {}
    if not isinstance(parameters, Mapping):
        raise XclientValueError(f"parameters: expected a dict of str to str/bool/int/float, got {_short(parameters)}")
    for key, value in parameters.items():
        if not isinstance(key, str) or not key:
            raise XclientValueError(f"parameters: {key!r} cannot be set (a parameter name is a non-empty str)")
        if key in RESERVED_PARAMETERS:
            raise XclientValueError(
                f"parameters: {key!r} cannot be set: Triton reserves it (reserved: {sorted(RESERVED_PARAMETERS)}); "
                "choose another name for a custom parameter"
            )
        if key.startswith(RESERVED_PREFIX):
            raise XclientValueError(f"parameters: {key!r} cannot be set (the {RESERVED_PREFIX!r} prefix is Triton's)")
        if type(value) not in (str, bool, int, float):
            raise XclientValueError(
                f"parameters: {key!r} must be a str, bool, int or float, got {type(value).__name__} {_short(value)}"
            )
        if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
            raise XclientValueError(f"parameters: {key!r}: {value} is out of range for an int64 parameter")
    return parameters


def finish_response(
    outputs: dict[str, np.ndarray[Any, Any]], request: PreparedRequest
) -> dict[str, np.ndarray[Any, Any]]:
    """Strip the batch axis from the outputs when :func:`prepare_request` added it."""
    if request.added_batch_axis:
        return {name: array[0] if array.ndim else array for name, array in outputs.items()}
    return outputs


def map_arguments(config: ModelConfig, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map positional arguments (config order) or keyword arguments (by name) to inputs.

    ``None`` means "not given", so optional inputs can be skipped positionally.
    """
    model = config.name
    if args and kwargs:
        raise XclientValueError(
            f"Model {model!r}: pass inputs either positionally or by name, not both "
            f"(got {len(args)} positional and {sorted(kwargs)} by name)",
            model=model,
        )
    if len(args) > len(config.inputs):
        raise XclientValueError(
            f"Model {model!r} takes at most {len(config.inputs)} inputs {_names(config.inputs)}, "
            f"got {len(args)} positional arguments",
            model=model,
        )
    if args:
        values = {spec.name: value for spec, value in zip(config.inputs, args, strict=False)}
    else:
        known = {spec.name for spec in config.inputs}
        unknown = [name for name in kwargs if name not in known]
        if unknown:
            raise XclientValueError(
                f"Model {model!r} has no input {unknown[0]!r}; its inputs are {_names(config.inputs)}",
                model=model,
                input=unknown[0],
            )
        values = dict(kwargs)
    values = {name: value for name, value in values.items() if value is not None}
    for spec in config.inputs:
        if not spec.optional and spec.name not in values:
            raise XclientValueError(
                f"Model {model!r}: missing required input {spec.describe()}", model=model, input=spec.name
            )
    return values


def coerce(config: ModelConfig, spec: TensorSpec, value: Any) -> np.ndarray[Any, Any]:
    """Turn ``value`` into an array of the input's dtype, refusing any cast that loses information."""
    if spec.dtype == np.dtype(np.void):
        raise _error(config, spec, "a dtype numpy can represent", f"a model input of type {spec.triton_dtype}")
    if spec.is_bytes:
        return _to_bytes(config, spec, value)
    if isinstance(value, (str, bytes)):
        raise _error(config, spec, f"numbers ({spec.triton_dtype})", f"{type(value).__name__} {_short(value)}")
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise _error(config, spec, f"numbers ({spec.triton_dtype})", f"{type(value).__name__} ({e})") from None
    if array.dtype == spec.dtype:
        return array
    if array.dtype.kind not in "biuf":
        raise _error(config, spec, f"numbers ({spec.triton_dtype})", f"an array of dtype {array.dtype}")
    return _lossless_cast(config, spec, array)


def _lossless_cast(config: ModelConfig, spec: TensorSpec, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    target = spec.dtype
    given = f"{array.dtype} values"
    if target.kind == "b":
        if array.dtype.kind in "iu" and np.isin(array, (0, 1)).all():
            return array.astype(target)
        raise _error(config, spec, "booleans (BOOL), or integers 0/1", given)
    if target.kind in "iu":
        if array.dtype.kind == "f":
            if np.isnan(array).any():
                raise _error(config, spec, f"integers ({spec.triton_dtype})", f"{given} including NaN")
            if not np.isfinite(array).all() or (array != np.round(array)).any():
                raise _error(
                    config, spec, f"integers ({spec.triton_dtype})", f"{given} with a fractional or infinite part"
                )
        if array.size and array.dtype.kind != "b":
            info = np.iinfo(target)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                raise _error(
                    config,
                    spec,
                    f"{spec.triton_dtype} values in [{info.min}, {info.max}]",
                    f"{given} in [{low}, {high}]",
                )
        return array.astype(target)
    # float target: narrowing between floats is allowed (that is what FP32 inputs mean), overflow is not
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target)
        exact = array.dtype.kind not in "iu" or (cast.astype(array.dtype) == array).all()  # inf cast back warns
    if not exact:
        raise _error(config, spec, f"integers exactly representable as {spec.triton_dtype}", given)
    if array.dtype.kind == "f" and (np.isinf(cast) & np.isfinite(array)).any():
        raise _error(config, spec, f"values within the range of {spec.triton_dtype}", f"{given} that overflow it")
    return cast


def _to_bytes(config: ModelConfig, spec: TensorSpec, value: Any) -> np.ndarray[Any, Any]:
    """Text for a BYTES input: ``str`` becomes UTF-8; every element must be ``str`` or ``bytes``. A bytes
    subclass (``numpy.bytes_``) becomes plain ``bytes``: serializers that test ``type(x) is bytes`` would
    otherwise send its ``str()`` (``b"b'x'"``)."""
    if isinstance(value, (str, bytes)):
        return np.array(_utf8(config, spec, value, ()) if isinstance(value, str) else bytes(value), dtype=_OBJECT)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S":
            return value.astype(_OBJECT)
        if value.dtype.kind not in "OU":
            raise _error(config, spec, "text (str or bytes)", f"an array of dtype {value.dtype}")
        if value.dtype == _OBJECT and all(type(item) is bytes for item in value.flat):
            return value  # already what is sent: no copy
        source = value
    else:
        try:
            source = np.array(value, dtype=_OBJECT)
        except (ValueError, TypeError) as e:
            raise _error(config, spec, "text (str or bytes)", f"{type(value).__name__} ({e})") from None
    out = np.empty(source.shape, dtype=_OBJECT)
    flat_out = out.reshape(-1)
    for index, item in enumerate(source.flat):
        if isinstance(item, bytes):
            flat_out[index] = item if type(item) is bytes else bytes(item)
        elif isinstance(item, str):
            flat_out[index] = _utf8(config, spec, item, np.unravel_index(index, source.shape) if source.ndim else ())
        else:
            where = np.unravel_index(index, source.shape) if source.ndim else ()
            raise _error(
                config,
                spec,
                "text (str or bytes) in every element",
                f"{type(item).__name__} {_short(item)} at {list(where)}",
            )
    return out


def _utf8(config: ModelConfig, spec: TensorSpec, text: str, where: tuple[Any, ...]) -> bytes:
    """``text`` in UTF-8; a str that has none (a lone surrogate, as from undecodable bytes) is refused."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        at = f" at {[int(i) for i in where]}" if where else ""
        raise _error(
            config, spec, "text that UTF-8 can encode (or bytes)", f"str {_short(text)}{at} ({e.reason})"
        ) from None


def _check_shape(
    config: ModelConfig, spec: TensorSpec, array: np.ndarray[Any, Any], *, batch: bool
) -> np.ndarray[Any, Any]:
    dims = spec.shape
    if not batch and array.ndim == 0 and len(dims) == 1:
        array = array.reshape(1)  # a scalar for a [1] or [-1] input
    shape = array.shape[1:] if batch else array.shape
    if (
        (batch and array.ndim == 0)
        or len(shape) != len(dims)
        or any(d not in (-1, s) for d, s in zip(dims, shape, strict=False))
    ):
        expected = f"shape {['batch', *dims] if batch else list(dims)}"
        hint = ""
        if not batch and config.batching and array.ndim == len(dims) + 1:
            hint = " (a batch? use infer_batch)"
        elif batch and array.ndim == len(dims):
            hint = " (one sample? use infer_sample, or add the batch axis)"
        raise _error(config, spec, expected, f"shape {list(array.shape)}{hint}")
    return array


def _error(config: ModelConfig, spec: TensorSpec, expected: str, given: str) -> XclientValueError:
    return XclientValueError(
        f"Model {config.name!r}, input {spec.describe()}: expected {expected}, got {given}",
        model=config.name,
        input=spec.name,
    )


def _names(specs: Sequence[TensorSpec]) -> str:
    return "[" + ", ".join(repr(spec.name) for spec in specs) + "]"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
