"""``xclient demo``: a tour of Xclient on a real Triton server, each step checked.

With no ``--url`` it starts the local server with the demo models (the ``demo`` extra) and stops it at
the end; with ``--url`` it runs the same tour against a server that serves them. Each step uses one part
of Xclient, checks what came back, and prints a short line; the exit code is 0 only if every step passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..exceptions import ServerUnavailableError
from ._app import DEMO_LLM, EXIT_ERROR, Commands, Connection, Context, add_connection_options, describe_error
from ._output import Console, first_line

TEXT_MODEL = "text"
EMBEDDINGS_MODEL = "bge-m3-v"
RERANK_MODEL = "bge-reranker-v2-m3"
DEMO_MODEL_NAMES = (TEXT_MODEL, DEMO_LLM, EMBEDDINGS_MODEL, RERANK_MODEL)
_TITLE_WIDTH = 22


def add_commands(commands: Commands) -> None:
    demo = commands.add(
        "demo",
        _demo,
        help="a checked tour of Xclient: starts a local Triton server with the demo models, uses every client",
        examples=[
            "xclient demo                                   # starts and stops its own server",
            "xclient demo --url grpc://localhost:8001       # a server already serving the demo models",
            "xclient demo --url http://gpu-box:8000 --grpc-url grpc://gpu-box:8001",
        ],
        connection=False,
    )
    add_connection_options(
        demo, url_help="run the tour against this server instead of starting one (it must serve the demo models)"
    )
    demo.add_argument(
        "--grpc-url", metavar="URL", help="with an HTTP --url: where to stream over gRPC (default: its host, port 8001)"
    )


class StepFailed(Exception):
    """A step got an answer, but not the expected one."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


@dataclasses.dataclass(frozen=True)
class Tour:
    """The server's endpoints: ``connections`` (HTTP first, then gRPC, as known) and ``stream``, the gRPC
    endpoint of the decoupled step. Steps that show a second protocol use the last connection."""

    connections: tuple[Connection, ...]
    stream: Connection

    @property
    def main(self) -> Connection:
        return self.connections[0]

    @property
    def other(self) -> Connection:
        return self.connections[-1]


# -- the steps: each returns its lines of output, or raises --------------------------------------------


def _server_client(tour: Tour) -> list[str]:
    with tour.main.server() as server:
        live, ready = server.is_live(), server.is_ready()
        version = server.metadata().get("version", "?")
        ready_models = {m.name for m in server.models() if m.ready}
    check(live and ready, f"the server is {'live' if live else 'not live'} and {'ready' if ready else 'not ready'}")
    missing = [name for name in DEMO_MODEL_NAMES if name not in ready_models]
    check(not missing, f"the server does not serve the demo models {missing} (start it with `xclient serve`)")
    return [f"Triton {version}, live and ready; {len(ready_models)} models ready, the demo's among them"]


def _model_client(tour: Tour) -> list[str]:
    from ..client import ModelClient

    lines: list[str] = []
    for connection in tour.connections:
        with ModelClient(connection.url, TEXT_MODEL, **connection.client_options()) as client:
            sample = client.infer_sample("hello, triton")
            batch = client.infer_batch([["你好"], ["world"]])
        upper, length = sample["UPPER"][0].decode(), int(sample["LENGTH"][0])
        rows = [row[0].decode() for row in batch["UPPER"]]
        check((upper, length, rows) == ("HELLO, TRITON", 13, ["你好", "WORLD"]), f"unexpected: {upper!r} {rows}")
        protocol = _protocol(connection)
        if lines:
            lines.append(f"{protocol}  the same calls -> the same outputs")
        else:
            lines += [
                f"{protocol}  infer_sample('hello, triton') -> UPPER {upper!r}, LENGTH {length}",
                f"{protocol}  infer_batch([['你好'], ['world']]) -> UPPER {rows}",
            ]
    return lines


def _futures_client(tour: Tour) -> list[str]:
    from ..client import FuturesModelClient

    words = ["one", "two", "three", "four"]
    options = tour.main.client_options()
    with FuturesModelClient(tour.main.url, TEXT_MODEL, max_workers=4, **options) as client:
        futures = [client.infer_sample(word) for word in words]
        results = [future.result()["UPPER"][0].decode() for future in futures]
    check(results == [word.upper() for word in words], f"unexpected: {results}")
    return [f"{_protocol(tour.main)}  4 calls, 4 at once on one loop thread, futures -> {results}"]


def _asyncio_client(tour: Tour) -> list[str]:
    from ..client import AsyncioModelClient

    words = ["北京", "上海", "深圳"]

    async def lengths() -> list[int]:
        async with AsyncioModelClient(tour.other.url, TEXT_MODEL, **tour.other.client_options()) as client:
            results = await asyncio.gather(*(client.infer_sample(word) for word in words))
        return [int(result["LENGTH"][0]) for result in results]

    found = asyncio.run(lengths())
    check(found == [2, 2, 2], f"unexpected lengths {found}")
    return [f"{_protocol(tour.other)}  asyncio.gather of 3 calls {words} -> LENGTH {found}"]


def _decoupled_client(tour: Tour) -> list[str]:
    from ..client import DecoupledModelClient

    sampling = json.dumps({"max_tokens": 8})
    inputs: dict[str, Any] = {"text_input": "Tell me about Triton", "stream": True, "exclude_input_in_output": True}
    try:
        with (
            DecoupledModelClient(tour.stream.url, DEMO_LLM, **tour.stream.client_options()) as client,
            client.infer_sample(**inputs, sampling_parameters=sampling) as responses,
        ):
            pieces = [b"".join(r["text_output"].tolist()).decode("utf-8", "replace") for r in responses]
    except ServerUnavailableError as e:
        raise StepFailed(f"{first_line(str(e))[0]} (streams go over gRPC: give its URL with --grpc-url)") from None
    check(len(pieces) == 8, f"expected 8 responses (max_tokens 8), got {len(pieces)}")
    return [f"{_protocol(tour.stream)}  {DEMO_LLM} (vLLM's contract) streamed {len(pieces)} responses: {pieces}"]


def _chat_invoke(tour: Tour) -> list[str]:
    from ..llms import ChatMetaLM

    llm = ChatMetaLM(model=DEMO_LLM, max_tokens=24, **tour.other.llm_options())
    try:
        message = llm.invoke([("system", "你是一个简洁的助手。"), ("human", "用一句话介绍一下你自己")])
    finally:
        llm.close()
    text = str(message.content)
    check(bool(text.strip()), "an empty answer")
    usage: dict[str, Any] = dict(message.usage_metadata or {})
    return [
        f"invoke('用一句话介绍一下你自己') -> {_short(text)}",
        f"finish_reason {message.response_metadata.get('finish_reason')!r}, usage {dict(usage)}",
    ]


def _chat_stream(tour: Tour) -> list[str]:
    from ..llms import ChatMetaLM

    llm = ChatMetaLM(model=DEMO_LLM, max_tokens=64, **tour.other.llm_options())
    try:
        chunks = [str(chunk.content) for chunk in llm.stream("Tell me about Triton", stop=["Triton"])]
    finally:
        llm.close()
    text = "".join(chunks)
    check(bool(text) and "Triton" not in text, f"the stop word was not honoured: {text!r}")
    return [
        f"stream('Tell me about Triton', stop=['Triton']) -> {len([c for c in chunks if c])} chunks",
        f"{text!r}  (cut before the stop word)",
    ]


def _embeddings(tour: Tour) -> list[str]:
    from ..embeddings import MetaLMEmbeddings

    texts = ["A cat sits on the mat", "A kitten is sitting on a rug", "The stock market fell sharply today"]
    embeddings = MetaLMEmbeddings(model=EMBEDDINGS_MODEL, **tour.main.adapter_options())
    try:
        dense, sparse = embeddings.embed_documents_sparse(texts)
    finally:
        embeddings.close()
    vectors = np.asarray(dense)
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    check(near > far, f"similar texts should be closer: cos {near:.2f} vs {far:.2f}")
    check(all(s and min(s.values()) >= 0 for s in sparse), "a sparse vector is empty or negative")
    top = sorted(sparse[0].items(), key=lambda item: -item[1])[:3]
    return [
        f"dense: {len(dense)} vectors of {vectors.shape[1]} floats (all-MiniLM-L6-v2)",
        f"cos('{texts[0]}', '{texts[1]}') {near:.2f} > cos(…, '{texts[2]}') {far:.2f}",
        f"sparse: token id -> weight per text; the first: {len(sparse[0])} tokens, top {dict(top)}",
    ]


def _rerank(tour: Tour) -> list[str]:
    from ..rerank import MetaLMRerank

    query = "What is the capital of France?"
    passages = [
        "Bananas are rich in potassium.",
        "Paris is the capital and largest city of France.",
        "The Great Wall of China is thousands of kilometres long.",
    ]
    reranker = MetaLMRerank(model=RERANK_MODEL, **tour.main.adapter_options())
    try:
        ranked = reranker.rerank(query, passages)
    finally:
        reranker.close()
    check(ranked[0].index == 1, f"the passage about Paris should come first, got {passages[ranked[0].index]!r}")
    return [f"rerank({query!r}):"] + [f"  {r.score:6.2f}  {passages[r.index]}" for r in ranked]


STEPS: Sequence[tuple[str, Callable[[Tour], list[str]]]] = (
    ("ServerClient", _server_client),
    ("ModelClient", _model_client),
    ("FuturesModelClient", _futures_client),
    ("AsyncioModelClient", _asyncio_client),
    ("DecoupledModelClient", _decoupled_client),
    ("ChatMetaLM.invoke", _chat_invoke),
    ("ChatMetaLM.stream", _chat_stream),
    ("MetaLMEmbeddings", _embeddings),
    ("MetaLMRerank", _rerank),
)


def _protocol(connection: Connection) -> str:
    return {"http": "HTTP", "grpc": "gRPC"}[connection.protocol]


def _short(text: str, limit: int = 48) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# -- the run ---------------------------------------------------------------------------------------------


def _demo(ctx: Context) -> int:
    args, console = ctx.args, ctx.console
    if args.url is None:
        with _local_server(ctx) as tour:
            return run_tour(ctx, tour)
    main = Connection(args.url, args.api_key or None, args.timeout)
    other = dataclasses.replace(main, url=args.grpc_url) if args.grpc_url else main
    connections = (main,) if other.url == main.url else (main, other)
    console.print(console.style(f"Xclient demo against {', '.join(c.shown for c in connections)}", "bold"))
    # The one step that needs gRPC: next to a lone HTTP URL, Triton's default gRPC port on its host.
    return run_tour(ctx, Tour(connections, other.grpc()))


@contextlib.contextmanager
def _local_server(ctx: Context) -> Iterator[Tour]:
    """Start the local server with the demo models, yield its tour, stop it."""
    from ..server import DEMO_MODELS, LocalTritonServer

    console, args = ctx.console, ctx.args
    key = args.api_key or None
    console.print(console.style("Xclient demo: a real Triton server on this machine, with the demo models", "bold"))
    console.print("starting it (the nvidia-pytriton wheel's tritonserver, Python backend) ...")
    started = time.perf_counter()
    with LocalTritonServer(DEMO_MODELS, api_key=key) as server:
        elapsed = time.perf_counter() - started
        console.print(f"up in {elapsed:.1f} s: {server.http_url} (HTTP), {server.grpc_url} (gRPC)")
        http, grpc = (Connection(url, key, args.timeout) for url in (server.http_url, server.grpc_url))
        yield Tour((http, grpc), grpc)
    console.print("the server is stopped")


def run_tour(ctx: Context, tour: Tour) -> int:
    """Run every step, printing a line each; 0 if all passed."""
    console = ctx.console
    console.print()
    failed = 0
    for title, step in STEPS:
        started = time.perf_counter()
        try:
            lines = step(tour)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a failed step is reported, and the tour goes on
            failed += 1
            message = str(e) if isinstance(e, StepFailed) else describe_error(e)[1]
            if ctx.args.debug:
                console.note("".join(traceback.format_exception(e)).rstrip())
            _report(console, False, title, [first_line(message)[0]], started)
        else:
            _report(console, True, title, lines, started)
    console.print()
    if failed:
        console.print(console.style(f"{failed} of {len(STEPS)} steps failed", "bold", "red"))
        return EXIT_ERROR
    console.print(console.style(f"all {len(STEPS)} steps passed", "bold", "green"))
    return 0


def _report(console: Console, ok: bool, title: str, lines: list[str], started: float) -> None:
    mark = console.style("✓", "green") if ok else console.style("✗", "red")
    elapsed = console.style(f"({(time.perf_counter() - started) * 1000:.0f} ms)", "dim")
    indent = " " * (_TITLE_WIDTH + 3)
    console.print(f"{mark} {console.style(title.ljust(_TITLE_WIDTH), 'bold')} {lines[0]}  {elapsed}")
    for line in lines[1:]:
        console.print(indent + line)
