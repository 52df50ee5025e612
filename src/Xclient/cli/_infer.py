"""``xclient infer MODEL name=VALUE ...``: any model, through the base clients.

A coupled model answers once (:class:`~Xclient.client.ModelClient`); a decoupled one streams its
responses (:class:`~Xclient.client.DecoupledModelClient`, gRPC only), each printed as it comes.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..exceptions import IncompatibleModelError, XclientValueError
from ._app import Commands, Context, add_rest
from ._inputs import parse_assignments
from ._output import to_json

Outputs = Mapping[str, np.ndarray]


def add_commands(commands: Commands) -> None:
    infer = commands.add(
        "infer",
        _infer,
        help="run any model: inputs as NAME=VALUE (JSON, text, or a .npy file); outputs printed or saved as .npy",
        examples=[
            "xclient infer text INPUT_TEXT=你好",
            "xclient infer my_model a='[1.5, 2.0]' b=inputs/b.npy --output-dir out/",
            "xclient infer my_model --batch a='[[1.0], [2.0]]' --json",
            "xclient infer Qwen2-0.5B-Instruct text_input='你好' stream=true --url grpc://localhost:8001",
        ],
        json="one JSON object of outputs per response",
    )
    infer.add_argument("model", metavar="MODEL")
    add_rest(infer, "inputs", metavar="NAME=VALUE", help="VALUE: a .npy file, JSON, or else the text itself")
    infer.add_argument("--model-version", metavar="VERSION", help="default: the server's choice")
    infer.add_argument("--batch", action="store_true", help="the inputs' first axis is the batch (infer_batch)")
    infer.add_argument("--output-dir", type=pathlib.Path, metavar="DIR", help="save each output as DIR/NAME.npy")


def _infer(ctx: Context) -> int:
    values = parse_assignments(ctx.args.inputs)
    for index, (outputs, streamed) in enumerate(_responses(ctx, values)):
        _show(ctx, outputs, index, streamed=streamed)
    return 0


def _responses(ctx: Context, values: dict[str, Any]) -> Iterator[tuple[Outputs, bool]]:
    """The model's responses, each with whether it came in a stream: one for a coupled model, as many as
    it sends for a decoupled one."""
    from ..client import DecoupledModelClient, ModelClient

    args, connection = ctx.args, ctx.connection
    options = {"model_version": args.model_version, **connection.client_options()}
    with ModelClient(connection.url, args.model, **options) as client:
        try:
            call = client.infer_batch if args.batch else client.infer_sample
            yield call(**values), False
            return
        except IncompatibleModelError:  # decoupled: stream instead
            if connection.protocol != "grpc":
                raise XclientValueError(
                    f"model {args.model!r} is decoupled (it streams its responses), which Triton does over gRPC "
                    f"only: use --url {' --url '.join(connection.grpc().urls)} (or the server's gRPC port)"
                ) from None
    with DecoupledModelClient(connection.url, args.model, **options) as streaming:
        stream = streaming.infer_batch if args.batch else streaming.infer_sample
        with stream(**values) as responses:  # leaving (Ctrl-C too) cancels the request on the server
            for outputs in responses:
                yield outputs, True


def _show(ctx: Context, outputs: Outputs, index: int, *, streamed: bool) -> None:
    console, args = ctx.console, ctx.args
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for name, array in outputs.items():
            path = args.output_dir / (f"{name}.npy" if index == 0 else f"{name}.{index}.npy")
            np.save(path, _storable(array), allow_pickle=False)
            console.print(str(path))
    elif args.json:
        console.json(outputs)
    else:
        if streamed:  # every response of a stream is labelled, the first one too
            console.print(console.style(f"-- response {index + 1}", "dim"))
        rows = [[name, _dtype(array), str(list(array.shape)), _preview(array)] for name, array in outputs.items()]
        console.table(["output", "dtype", "shape", "value"], rows)


def _storable(array: np.ndarray) -> np.ndarray:
    """BYTES outputs as fixed-width bytes, which ``np.load`` reads without pickle (trailing NULs drop)."""
    return array.astype(np.bytes_) if array.dtype == np.dtype(object) else array


def _dtype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype) or array.dtype)


def _preview(array: np.ndarray, limit: int = 8) -> str:
    """The first ``limit`` values (of the flattened array) on one line, text decoded."""
    flat = array.reshape(-1)
    head = flat[:limit]
    if head.dtype == np.dtype(object):
        text = to_json(head)
    else:
        text = np.array2string(head, separator=", ", max_line_width=1_000_000)
    return text[:-1] + f", ... ({flat.size} values)]" if flat.size > limit else text
