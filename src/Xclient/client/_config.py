"""The model config as a typed object, built the same way from either protocol."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

#: The numpy dtype of BYTES tensors (and of the text arrays sent in them).
OBJECT_DTYPE = np.dtype(object)
# Triton data types (config names without the TYPE_ prefix) and their numpy dtypes.
TRITON_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "STRING": OBJECT_DTYPE,
    "BYTES": OBJECT_DTYPE,
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model. ``shape`` excludes the batch axis; -1 means any size."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    optional: bool = False
    triton_dtype: str = ""

    @property
    def is_bytes(self) -> bool:
        return self.dtype == OBJECT_DTYPE

    def describe(self) -> str:
        """``'INPUT_TEXT' BYTES [1]``: how errors name a tensor."""
        return f"{self.name!r} {self.triton_dtype} {list(self.shape)}"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What Xclient needs to know of a model, from ``get_model_config`` over HTTP or gRPC."""

    name: str
    version: str | None
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    decoupled: bool = False
    backend: str = ""
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    @functools.cached_property
    def plan(self) -> RequestPlan:
        """What every request to this model shares, worked out once per config (see :class:`RequestPlan`)."""
        return RequestPlan.of(self)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, version: str | None = None) -> ModelConfig:
        """Build from Triton's JSON model config (HTTP's answer, or gRPC's with ``as_json=True``)."""
        if "config" in config and "name" not in config:  # gRPC's ModelConfigResponse
            config = config["config"]
        return cls(
            name=str(config.get("name", "")),
            version=version,
            max_batch_size=int(config.get("max_batch_size", 0)),
            inputs=tuple(_tensor_spec(t) for t in config.get("input", ())),
            outputs=tuple(_tensor_spec(t) for t in config.get("output", ())),
            decoupled=bool(config.get("model_transaction_policy", {}).get("decoupled", False)),
            backend=str(config.get("backend", "") or config.get("platform", "")),
            raw=config,
        )


def _tensor_spec(tensor: Mapping[str, Any]) -> TensorSpec:
    triton_dtype = str(tensor.get("data_type", "")).removeprefix("TYPE_")
    # BF16 and anything newer have no numpy dtype: keep the spec (as void) so errors can name it.
    dtype = TRITON_TO_NUMPY.get(triton_dtype, np.dtype(np.void))
    if triton_dtype == "STRING":
        triton_dtype = "BYTES"
    dims = tuple(int(d) for d in tensor.get("dims", ()))
    return TensorSpec(
        name=str(tensor["name"]),
        dtype=dtype,
        shape=dims,
        optional=bool(tensor.get("optional", False)),
        triton_dtype=triton_dtype,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class RequestPlan:
    """The protocol-neutral part of every request to one model config, computed once: each input's
    Triton datatype and shape (by name, config order), and the output names. A steady-state call only
    codes its data; each protocol keeps what it derives from the plan (the gRPC request template) in
    :attr:`templates`, keyed by its own name, so that is built once per config too.
    """

    model: str
    datatypes: Mapping[str, str]  # input name -> Triton datatype ("BYTES", "FP32", ...)
    shapes: Mapping[str, tuple[int, ...]]  # input name -> dims without the batch axis (-1: any)
    outputs: tuple[str, ...]
    batching: bool
    templates: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, config: ModelConfig) -> RequestPlan:
        return cls(
            model=config.name,
            datatypes={spec.name: spec.triton_dtype for spec in config.inputs},
            shapes={spec.name: spec.shape for spec in config.inputs},
            outputs=tuple(spec.name for spec in config.outputs),
            batching=config.batching,
        )


class RequestInputs(dict[str, Any]):
    """The arrays of one request (input name -> numpy array, config order), with the :class:`RequestPlan`
    of the config they were coded for: a protocol's request builder reads the datatypes from it instead
    of working them out per call. A plain dict works too (the datatypes then come from the arrays)."""

    __slots__ = ("plan",)

    def __init__(self, plan: RequestPlan | None) -> None:
        super().__init__()
        self.plan = plan
