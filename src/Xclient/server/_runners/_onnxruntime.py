"""The ONNX runner: ``model.onnx`` run by ONNX Runtime on CPU (extra ``onnx``); inputs and outputs by name."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import numpy as np

from ._base import Runner


class TritonPythonModel(Runner):
    package, extra = "onnxruntime", "onnx"

    def load(self, path: pathlib.Path) -> None:
        import onnxruntime

        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        graph_inputs = {t.name for t in self._session.get_inputs()}
        graph_outputs = {t.name for t in self._session.get_outputs()}
        unknown = [t.name for t in self.inputs if t.name not in graph_inputs] + [
            t.name for t in self.outputs if t.name not in graph_outputs
        ]
        if unknown:
            raise ValueError(
                f"the config names {unknown}, which the ONNX graph does not have (its inputs: {sorted(graph_inputs)}, "
                f"its outputs: {sorted(graph_outputs)})"
            )

    def run(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feed = {name: _text(array) if array.dtype == np.object_ else array for name, array in arrays.items()}
        return [np.asarray(v) for v in self._session.run([t.name for t in self.outputs], feed)]


def _text(array: np.ndarray) -> np.ndarray:
    """Triton's BYTES items as the str items ONNX Runtime takes (UTF-8)."""
    items = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in array.ravel()]
    return np.array(items, dtype=object).reshape(array.shape)
