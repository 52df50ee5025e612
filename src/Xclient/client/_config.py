"""The model config as a typed object, built the same way from either protocol."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

#: The numpy dtype of BYTES tensors (and of the text arrays sent in them).
OBJECT_DTYPE = np.dtype(object)
# Triton data types (config names without the TYPE_ prefix) and their numpy dtypes.
TRITON_TO_NUMPY: dict[str, np.dtype] = {
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
    dtype: np.dtype
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
