"""A standard Triton model repository made servable by the nvidia-pytriton wheel's tritonserver.

That server has the Python backend only. So each TorchScript (``pytorch_libtorch``, ``model.pt``) or
ONNX (``onnxruntime_onnx``, ``model.onnx``) model becomes, in a generated repository, a Python-backend
model whose ``model.py`` is one of Xclient's runners (:mod:`Xclient.server._runners`) and whose config
is the user's with ``backend: "python"`` (names, dtypes, dims, max_batch_size, dynamic_batching and
instance groups kept; instances on CPU). A missing ONNX config is completed from the graph like
Triton's own auto-complete. Python-backend models and ensembles are served as they are. Anything
else (TensorRT, TensorFlow, OpenVINO, DALI, vLLM...) is refused with one line per model, and the
other models still start.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..exceptions import XclientValueError

#: What the local server can run, for the refusals.
SERVABLE = (
    "Python-backend models, ensembles, TorchScript (pytorch_libtorch, model.pt) and ONNX "
    "(onnxruntime_onnx, model.onnx) models on CPU"
)
#: The file each version directory of a generated model holds for its runner: which runner, which file.
RUNNER_SPEC = "xclient_runner.json"

_RUNNERS = {
    # runner: (module, the package it needs, the extra that installs it, the default file name)
    "torchscript": ("Xclient.server._runners._torchscript", "torch", "torch", "model.pt"),
    "onnx": ("Xclient.server._runners._onnxruntime", "onnxruntime", "onnx", "model.onnx"),
}
_PLATFORM_RUNNER = {"pytorch_libtorch": "torchscript", "onnxruntime_onnx": "onnx"}
_BACKEND_RUNNER = {"pytorch": "torchscript", "onnxruntime": "onnx"}
#: Triton's default file of the other platforms, to name a config-less model's platform in its refusal.
_OTHER_FILES = {
    "model.plan": "platform tensorrt_plan",
    "model.savedmodel": "platform tensorflow_savedmodel",
    "model.graphdef": "platform tensorflow_graphdef",
    "model.xml": "backend openvino",
    "model.dali": "backend dali",
}
#: Triton's auto-complete gives a batchable model this max_batch_size (its ``default-max-batch-size``).
DEFAULT_MAX_BATCH_SIZE = 4
_MAX_BATCH_SIZE = re.compile(r"^\s*max_batch_size\s*:", re.MULTILINE)

_ORT_TYPES = {
    "float": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "double": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "bool": "TYPE_BOOL",
    "string": "TYPE_STRING",
}


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of the user's repositories and how it is served."""

    name: str
    directory: pathlib.Path
    kind: str  # "as-is" (Python backend, ensemble), "torchscript", "onnx" (a runner-served model)
    versions: tuple[tuple[str, str, str], ...] = ()  # (version, file name, runner) of a runner-served model
    config: str = ""  # a runner-served model's Python-backend config.pbtxt


@dataclasses.dataclass(frozen=True)
class Plan:
    """The models to serve and the one-line refusals of the others."""

    models: tuple[Model, ...]
    refused: tuple[str, ...]


def plan(repositories: Sequence[pathlib.Path], wanted: Iterable[str] | None) -> Plan:
    """Sort the repositories' models into served and refused (nothing is written). A model directory
    has a ``config.pbtxt`` or a numbered version directory with a model file."""
    wanted_set = None if wanted is None else set(wanted)
    seen: dict[str, pathlib.Path] = {}
    models: list[Model] = []
    refused: list[str] = []
    for repository in repositories:
        for directory in sorted(p for p in repository.iterdir() if p.is_dir() and _is_model_dir(p)):
            if wanted_set is not None and directory.name not in wanted_set:
                continue
            if directory.name in seen:
                raise XclientValueError(
                    f"model_repository: model {directory.name!r} is in both {str(seen[directory.name])!r} "
                    f"and {str(repository)!r}"
                )
            seen[directory.name] = repository
            model = _classify(directory)
            if isinstance(model, str):
                refused.append(model)
            else:
                models.append(model)
    missing = sorted((wanted_set or set()) - set(seen))
    if missing:
        raise XclientValueError(f"models: {missing} are in none of the model repositories")
    return Plan(tuple(models), tuple(refused))


def _is_model_dir(directory: pathlib.Path) -> bool:
    return (directory / "config.pbtxt").exists() or any(_model_files(v) for v in _version_dirs(directory))


def _version_dirs(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted((p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _model_files(version: pathlib.Path) -> list[str]:
    names = {"model.pt", "model.onnx", "model.py", *_OTHER_FILES}
    return sorted(p.name for p in version.iterdir() if p.name in names)


def _refusal(name: str, what: str, why: str = "") -> str:
    reason = why or (
        f"Xclient's local server runs {SERVABLE}; serve this one with a full Triton server "
        "(docker: nvcr.io/nvidia/tritonserver)"
    )
    return f"cannot serve: {name} ({what}): {reason}"


def _classify(directory: pathlib.Path) -> Model | str:
    """The model, or its refusal."""
    from google.protobuf import text_format

    name = directory.name
    config = read_config(directory)
    platform, backend = config.platform, config.backend
    if backend == "python" or platform == "ensemble":
        return Model(name, directory, "as-is")
    what = f"platform {platform}" if platform else f"backend {backend}"
    if platform in _PLATFORM_RUNNER:
        kind = _PLATFORM_RUNNER[platform]
    elif backend in _BACKEND_RUNNER:
        kind = _BACKEND_RUNNER[backend]
    elif platform or backend:
        return _refusal(name, what)
    else:  # no platform nor backend: Triton goes by the model file
        files = {f for v in _version_dirs(directory) for f in _model_files(v)}
        if "model.pt" in files or "model.onnx" in files:
            kind = "torchscript" if "model.pt" in files else "onnx"
            what = f"{'model.pt' if kind == 'torchscript' else 'model.onnx'}, no platform"
        elif files & set(_OTHER_FILES):
            return _refusal(name, _OTHER_FILES[sorted(files & set(_OTHER_FILES))[0]])
        elif (directory / "config.pbtxt").exists():
            return _refusal(name, "no backend or platform", "its config.pbtxt names no backend nor platform")
        else:
            why = 'a Python-backend model needs a config.pbtxt with backend: "python"'
            return _refusal(name, "no config.pbtxt", why)
    versions = []
    for version in _version_dirs(directory):
        file = config.default_model_filename or _RUNNERS[kind][3]
        if not (version / file).exists():  # each version is served by the runner that fits its file
            file = next((f for f in ("model.pt", "model.onnx") if (version / f).exists()), "")
        if file:
            versions.append((version.name, file, "onnx" if file.endswith(".onnx") else "torchscript"))
    if not versions:
        return _refusal(name, what, f"no version directory holds {_RUNNERS[kind][3]} (expected {name}/1/...)")
    for runner in sorted({v[2] for v in versions}):
        _, package, extra, _ = _RUNNERS[runner]
        if importlib.util.find_spec(package) is None:
            return _refusal(name, what, f"its runner needs {package}: pip install 'llmops-xclient[{extra}]'")
    if not config.input and not config.output and all(v[2] == "torchscript" for v in versions):
        return _refusal(
            name,
            what,
            "a TorchScript file records neither its inputs' dtypes nor their dims, so it needs a config.pbtxt "
            'with input [...] and output [...] (names, data_type, dims; e.g. name: "INPUT__0")',
        )
    model = Model(name, directory, kind, tuple(versions))
    try:
        config_text = text_format.MessageToString(python_config(model), as_utf8=True)
    except Exception as e:  # an unreadable graph refuses this model only
        return _refusal(name, what, f"its config cannot be completed from {versions[-1][1]}: {e}".splitlines()[0])
    return dataclasses.replace(model, config=config_text)


def read_config(directory: pathlib.Path) -> Any:
    """The model's config.pbtxt as Triton's ``ModelConfig`` message (empty without the file)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    path = directory / "config.pbtxt"
    if path.exists():
        try:
            text_format.Parse(path.read_text(encoding="utf-8"), config)
        except text_format.ParseError as e:
            raise XclientValueError(f"model_repository: {str(path)!r} is not a valid model config: {e}") from None
    return config


def write(models: Sequence[Model], target: pathlib.Path) -> None:
    """Lay the served models out in ``target`` (an empty directory private to this server)."""
    for model in models:
        if model.kind == "as-is":
            (target / model.name).symlink_to(model.directory.resolve(), target_is_directory=True)
            continue
        out = target / model.name
        out.mkdir(mode=0o700)
        _write_private(out / "config.pbtxt", model.config)
        for entry in model.directory.iterdir():  # labels and other files next to the config
            if entry.name != "config.pbtxt" and not (entry.is_dir() and entry.name.isdigit()):
                (out / entry.name).symlink_to(entry.resolve())
        for version, file, runner in model.versions:
            source, version_dir = model.directory / version, out / version
            version_dir.mkdir(mode=0o700)
            for entry in source.iterdir():  # the model file and what it refers to (ONNX external data)
                if entry.name not in ("model.py", RUNNER_SPEC):
                    (version_dir / entry.name).symlink_to(entry.resolve())
            module = _RUNNERS[runner][0]
            _write_private(version_dir / "model.py", f"from {module} import TritonPythonModel  # noqa: F401\n")
            _write_private(version_dir / RUNNER_SPEC, json.dumps({"runner": runner, "file": file}))


def _write_private(path: pathlib.Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def python_config(model: Model) -> Any:
    """The user's config as a Python-backend config, completed from the ONNX graph when it has no tensors."""
    from tritonclient.grpc import model_config_pb2

    config = read_config(model.directory)
    if not config.input and not config.output:
        version, file, _ = next(v for v in reversed(model.versions) if v[2] == "onnx")  # plan() made sure
        path = model.directory / "config.pbtxt"
        has_max_batch_size = path.exists() and bool(_MAX_BATCH_SIZE.search(path.read_text("utf-8")))
        _complete_from_onnx(config, model.directory / version / file, has_max_batch_size=has_max_batch_size)
    config.name = model.name
    config.platform = ""
    config.backend = "python"
    config.default_model_filename = ""
    if not config.instance_group:
        config.instance_group.add(count=1)
    for group in config.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        del group.gpus[:]
    return config


def _complete_from_onnx(config: Any, path: pathlib.Path, *, has_max_batch_size: bool) -> None:
    """Triton's ONNX auto-complete: the graph's inputs and outputs (names, dtypes, dims); a dynamic first
    axis on every one of them is the batch axis (max_batch_size 4 and the dynamic batcher by default)."""
    import onnxruntime
    from tritonclient.grpc import model_config_pb2

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tensors = [("input", t) for t in session.get_inputs()] + [("output", t) for t in session.get_outputs()]
    shapes = [[d if isinstance(d, int) and d >= 0 else -1 for d in t.shape] for _, t in tensors]
    batchable = all(shape and shape[0] == -1 for shape in shapes)
    if not has_max_batch_size:
        config.max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable else 0
        if batchable and not config.HasField("dynamic_batching") and not config.HasField("sequence_batching"):
            config.dynamic_batching.SetInParent()
    batch = config.max_batch_size > 0
    if batch and not batchable:
        raise XclientValueError(
            f"model_repository: {str(path)!r}: max_batch_size {config.max_batch_size} needs a dynamic first axis "
            "on every input and output of the ONNX graph"
        )
    for (kind, tensor), shape in zip(tensors, shapes, strict=True):
        entry = getattr(config, kind).add()
        entry.name = tensor.name
        ort_type = str(tensor.type).removeprefix("tensor(").removesuffix(")")
        entry.data_type = model_config_pb2.DataType.Value(_ORT_TYPES.get(ort_type, "TYPE_INVALID"))
        entry.dims.extend(shape[1:] if batch else shape)
