"""The TorchScript runner: ``model.pt`` loaded with ``torch.jit.load`` on CPU (extra ``torch``).

Inputs go to ``forward`` by argument name when the config's names are its arguments' names, else by
Triton's ``INPUT__<index>`` convention, else in the config's order. Outputs (a tensor, or a
tuple/list of them) follow ``OUTPUT__<index>`` when the names say so, else the config's order.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._base import Runner, indexed_order


class TritonPythonModel(Runner):
    package, extra = "torch", "torch"

    def load(self, path: pathlib.Path) -> None:
        import torch

        self._torch = torch
        self._module = torch.jit.load(str(path), map_location="cpu")
        self._module.eval()
        arguments = [a.name for a in self._module.forward.schema.arguments[1:]]  # [0] is self
        names = [t.name for t in self.inputs]
        if set(names) <= set(arguments):
            order = [arguments.index(n) for n in names]
        else:
            order = indexed_order(names) or list(range(len(names)))
        if len(names) > len(arguments) or max(order, default=-1) >= len(arguments):
            raise ValueError(
                f"the config's inputs {names} do not fit forward({', '.join(arguments)}): use its argument "
                "names, or INPUT__0, INPUT__1, ... in the order of its arguments"
            )
        self._positions = dict(zip(names, order, strict=True))
        self._output_order = indexed_order([t.name for t in self.outputs]) or list(range(len(self.outputs)))

    def run(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        arguments: list[Any] = [None] * (max(self._positions.values(), default=-1) + 1)
        for name, array in arrays.items():
            arguments[self._positions[name]] = torch.from_numpy(np.array(array, copy=True))
        while arguments and arguments[-1] is None:  # optional inputs left out at the end: forward's defaults
            arguments.pop()
        with torch.inference_mode():
            result = self._module(*arguments)
        values = list(result) if isinstance(result, (tuple, list)) else [result]
        if max(self._output_order, default=-1) >= len(values):
            raise ValueError(f"forward() returned {len(values)} tensors, the config declares {len(self.outputs)}")
        return [values[i].detach().cpu().numpy() for i in self._output_order]
