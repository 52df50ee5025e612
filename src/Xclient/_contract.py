"""Finding a serving contract's tensors in a model config, for the embeddings and rerank adapters.

A role (``the text input``, ``the dense output``...) is filled by the tensor the user named, or
else by the only tensor that fits, or else by the fitting tensor whose name says so. Every failure
is an :class:`~Xclient.exceptions.IncompatibleModelError` that says what was expected, what the
model has, and which field overrides the choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

from .client import ModelConfig, TensorSpec
from .exceptions import IncompatibleModelError

Fits = Callable[[TensorSpec], bool]


def describe(specs: Sequence[TensorSpec]) -> str:
    """``'text' BYTES [1], 'x' FP32 [-1]`` (or ``none``)."""
    return ", ".join(spec.describe() for spec in specs) or "none"


def is_text(spec: TensorSpec) -> bool:
    """A BYTES tensor holding one text per sample: dims [1] or [-1]."""
    return spec.is_bytes and spec.shape in ((1,), (-1,))


def is_vector(spec: TensorSpec) -> bool:
    """A float tensor with one axis per sample: FP16, FP32 or FP64, dims [D] or [-1]."""
    return spec.dtype.kind == "f" and len(spec.shape) == 1


def is_scalar_or_list(spec: TensorSpec) -> bool:
    """A float tensor of scores: dims [1], [-1] or []."""
    return spec.dtype.kind == "f" and len(spec.shape) <= 1


def incompatible(config: ModelConfig, adapter: str, message: str) -> IncompatibleModelError:
    return IncompatibleModelError(f"Model {config.name!r} does not fit {adapter}: {message}", model=config.name)


@dataclasses.dataclass(frozen=True)
class Role:
    """A part a tensor plays in a contract (``the text input``), and how to recognize it.

    ``fits`` says what the tensor must be (dtype, dims), ``expected`` says it in words; ``option`` is
    the field that names the tensor explicitly; ``names`` are substrings that mark the role in a name,
    most telling first (case-insensitive); with ``named_only`` (an optional role) only such a tensor
    may be chosen.
    """

    kind: Literal["input", "output"]
    what: str
    fits: Fits
    expected: str
    option: str
    names: tuple[str, ...] = ()
    named_only: bool = False


def find(
    config: ModelConfig, adapter: str, role: Role, override: str | None, exclude: Sequence[TensorSpec] = ()
) -> TensorSpec | None:
    """The tensor that plays ``role``: the one named by ``override``, else the only one that fits,
    else the fitting one whose name says so; None if none fits. ``exclude``: tensors already cast."""
    specs = config.inputs if role.kind == "input" else config.outputs
    if override is not None:
        spec = next((s for s in specs if s.name == override), None)
        if spec is None:
            raise incompatible(
                config,
                adapter,
                f"it has no {role.kind} {override!r} ({role.option}); its {role.kind}s: {describe(specs)}",
            )
        if not role.fits(spec):
            raise incompatible(config, adapter, f"{role.kind} {spec.describe()} ({role.option}) is not {role.expected}")
        return spec
    candidates = [s for s in specs if role.fits(s) and s not in exclude]
    named = [s for needle in role.names for s in candidates if needle in s.name.lower()]
    if role.named_only:
        candidates = list(dict.fromkeys(named))
    if len(candidates) > 1 and not named:
        raise incompatible(
            config,
            adapter,
            f"cannot tell which {role.kind} is {role.what}: {describe(candidates)} all are {role.expected}; "
            f"set {role.option}=...",
        )
    return named[0] if named else candidates[0] if candidates else None


def pick(
    config: ModelConfig, adapter: str, role: Role, override: str | None, exclude: Sequence[TensorSpec] = ()
) -> TensorSpec:
    """:func:`find`, for a role the contract cannot do without."""
    spec = find(config, adapter, role, override, exclude)
    if spec is None:
        specs = config.inputs if role.kind == "input" else config.outputs
        raise incompatible(
            config,
            adapter,
            f"expected {role.what} ({role.expected}); its {role.kind}s: {describe(specs)}; "
            f"set {role.option}=... if it has one",
        )
    return spec


def check_no_other_required_inputs(config: ModelConfig, adapter: str, used: Sequence[TensorSpec]) -> None:
    """Refuse a model that requires inputs the adapter does not send."""
    others = [s for s in config.inputs if not s.optional and s not in used]
    if others:
        raise incompatible(
            config,
            adapter,
            f"it requires inputs {adapter} does not send: {describe(others)} (it sends {describe(used)})",
        )
