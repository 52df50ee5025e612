"""What every runner shares: the config's tensors, the batch, and Triton's requests and responses.

A runner subclass only loads its file (:meth:`Runner.load`) and runs one set of arrays
(:meth:`Runner.run`). Requests that Triton's dynamic batcher hands over together are run as one
batch when their shapes allow it, and split again.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_INDEXED = re.compile(r"^.+__(\d+)$")


def _pb_utils() -> Any:
    import triton_python_backend_utils  # the Python-backend stub's module

    return triton_python_backend_utils


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One input or output of the model config."""

    name: str
    data_type: str  # Triton's TYPE_FP32, ...
    dims: tuple[int, ...]


def tensors(entries: Sequence[Mapping[str, Any]]) -> list[Tensor]:
    return [Tensor(str(e["name"]), str(e["data_type"]), tuple(int(d) for d in e.get("dims", []))) for e in entries]


def indexed_order(names: Sequence[str]) -> list[int] | None:
    """Positions from Triton's ``NAME__<index>`` convention (``INPUT__0``), or None when the names don't all
    follow it (or repeat an index)."""
    found = [_INDEXED.match(name) for name in names]
    if not names or not all(found):
        return None
    order = [int(m.group(1)) for m in found if m]
    return order if len(set(order)) == len(order) else None


_NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def numpy_dtype(data_type: str) -> Any:
    try:
        return _NUMPY_TYPES[data_type]
    except KeyError:
        raise ValueError(f"data_type {data_type} has no numpy type: Xclient's runners cannot serve it") from None


class Runner:
    """The Python-backend model (``TritonPythonModel``) of one runner."""

    #: "torch", "onnxruntime": the package the runner needs, for the error when it is missing.
    package = ""
    extra = ""

    def initialize(self, args: Mapping[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.inputs = tensors(config.get("input", []))
        self.outputs = tensors(config.get("output", []))
        self.max_batch_size = int(config.get("max_batch_size", 0))
        version_dir = pathlib.Path(args["model_repository"]) / args["model_version"]
        spec = json.loads((version_dir / "xclient_runner.json").read_text(encoding="utf-8"))
        try:
            self.load(version_dir / spec["file"])
        except ImportError as e:
            raise RuntimeError(
                f"model {self.model_name!r} needs {self.package} ({e}): pip install 'llmops-xclient[{self.extra}]'"
            ) from e

    def load(self, path: pathlib.Path) -> None:
        raise NotImplementedError

    def run(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the config's order, of one set of input arrays (by input name)."""
        raise NotImplementedError

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        pb = _pb_utils()
        arrays = [self._arrays(pb, request) for request in requests]
        results: list[list[np.ndarray] | Exception]
        batch = self._batched(arrays)
        if batch is not None:
            sizes = [next(iter(a.values())).shape[0] for a in arrays]
            try:
                merged = [np.asarray(out) for out in self.run(batch)]
                if any(out.ndim == 0 or out.shape[0] != sum(sizes) for out in merged):
                    raise ValueError("an output without the batch axis")
                split = [np.split(out, np.cumsum(sizes)[:-1]) for out in merged]
                results = [[parts[i] for parts in split] for i in range(len(arrays))]
            except Exception:  # run them one by one: each request gets its own answer or error
                results = [self._run_one(a) for a in arrays]
        else:
            results = [self._run_one(a) for a in arrays]
        return [self._response(pb, result) for result in results]

    def _arrays(self, pb: Any, request: Any) -> dict[str, np.ndarray]:
        arrays = {}
        for spec in self.inputs:
            tensor = pb.get_input_tensor_by_name(request, spec.name)
            if tensor is not None:  # an optional input left out
                arrays[spec.name] = tensor.as_numpy()
        return arrays

    def _batched(self, arrays: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
        """The requests as one batch: only with a batch axis, and the same inputs and item shapes in each."""
        if self.max_batch_size <= 0 or len(arrays) < 2:
            return None
        first = arrays[0]
        for request in arrays:
            if not request or request.keys() != first.keys():
                return None
            if any(request[k].shape[1:] != first[k].shape[1:] for k in first):
                return None
            if len({a.shape[0] for a in request.values()}) != 1:
                return None
        return {name: np.concatenate([a[name] for a in arrays]) for name in first}

    def _run_one(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray] | Exception:
        try:
            return self.run(arrays)
        except Exception as e:  # the request's error, not the model's end
            return e

    def _response(self, pb: Any, result: list[np.ndarray] | Exception) -> Any:
        if isinstance(result, Exception):
            message = f"{self.model_name}: {type(result).__name__}: {result}"
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message))
        if len(result) != len(self.outputs):
            names = [o.name for o in self.outputs]
            error = f"{self.model_name}: the model returned {len(result)} outputs, the config declares {names}"
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(error))
        tensors = [
            pb.Tensor(spec.name, np.ascontiguousarray(np.asarray(value).astype(numpy_dtype(spec.data_type))))
            for spec, value in zip(self.outputs, result, strict=True)
        ]
        return pb.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        pass
