"""``xclient generate`` and ``xclient chat``: an LLM on the server, through :class:`~Xclient.llms.ChatMetaLM`.

Tokens are written as they come. Leaving a stream early (Ctrl-C) closes it, which cancels the request
on the server (gRPC: the stream's call; HTTP: the ``generate_stream`` connection).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

from ..exceptions import XclientValueError
from ._app import DEMO_LLM, ENV_MODEL, Commands, Context, env
from ._inputs import read_text_file
from ._output import is_tty

if TYPE_CHECKING:
    from ..llms import ChatMetaLM

Messages = list[tuple[str, str]]  # (role, content): LangChain's message tuples
EXIT_COMMANDS = ("/exit", "/quit")


def add_commands(commands: Commands) -> None:
    generate = commands.add(
        "generate",
        _generate,
        help="generate an answer to one prompt with an LLM, streamed as it comes",
        examples=[
            "xclient generate '用一句话介绍 Triton'",
            "xclient generate 'Tell me a joke' --max-tokens 64 --temperature 0.7 --stop '。'",
            "echo '你好' | xclient generate --json --url grpc://gpu-box:8001",
        ],
        json="one JSON object: model, text, finish_reason, usage",
    )
    generate.add_argument("prompt", nargs="?", help="the prompt (default: all of stdin)")
    _add_llm_options(generate)

    chat = commands.add(
        "chat",
        _chat,
        help="chat with an LLM, turn after turn (one message per line of stdin; /exit leaves)",
        examples=[
            "xclient chat --system '你是一个简洁的助手'",
            "printf '你好\\n再说一遍\\n/exit\\n' | xclient chat --max-tokens 32",
        ],
    )
    _add_llm_options(chat)


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=env(ENV_MODEL, DEMO_LLM), help=f"env {ENV_MODEL}; default {DEMO_LLM}")
    group.add_argument("--system", metavar="TEXT", help="a system message before the conversation")
    group.add_argument("--max-tokens", type=int, metavar="N", help="tokens to generate at most (default 512)")
    group.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (default: the server's)")
    group.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling (default: the server's)")
    group.add_argument("--top-k", type=int, metavar="K", help="top-k sampling (default: the server's)")
    group.add_argument("--stop", action="append", metavar="TEXT", help="stop before TEXT (repeatable)")
    group.add_argument(
        "--chat-template",
        metavar="NAME_OR_FILE",
        help="qwen, chatml, llama3, internlm2, raw, or a Jinja2 template or file",
    )
    group.add_argument("--no-stream", dest="stream", action="store_false", help="print the answer once it is complete")


def _llm(ctx: Context) -> ChatMetaLM:
    from ..llms import ChatMetaLM

    args = ctx.args
    fields = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "stop": args.stop,
        "chat_template": args.chat_template,
    }
    given = {name: value for name, value in fields.items() if value is not None}
    return ChatMetaLM(model=args.model, **ctx.connection.llm_options(), **given)


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None

    @classmethod
    def of(cls, message: Any) -> Reply:
        """From LangChain's answer (an ``AIMessage``, or the sum of the stream's chunks)."""
        if message is None:  # a stream with no chunk
            return cls("", None, None)
        usage = message.usage_metadata
        return cls(str(message.content), message.response_metadata.get("finish_reason"), dict(usage) if usage else None)


def answer(llm: ChatMetaLM, messages: Messages, ctx: Context, *, stream: bool, show: bool) -> Reply:
    """The LLM's answer to ``messages``; with ``show``, written to stdout (token by token when streaming)."""
    console = ctx.console
    if not stream:
        reply = Reply.of(llm.invoke(messages))
        if show:
            console.print(reply.text)
        return reply
    message = None
    chunks = cast("Generator[Any, None, None]", llm.stream(messages))  # a generator: it has close()
    with contextlib.closing(chunks):  # closing it cancels the request on the server (Ctrl-C too)
        for chunk in chunks:
            message = chunk if message is None else message + chunk
            if show and chunk.content:
                console.write(str(chunk.content))
    if show:
        console.print()
    return Reply.of(message)


def _generate(ctx: Context) -> int:
    args = ctx.args
    prompt = args.prompt
    if prompt is None:
        if is_tty(ctx.stdin):
            raise XclientValueError("no prompt: give it as an argument or on stdin")
        prompt = read_text_file("-", ctx.stdin).strip()
    messages: Messages = [("system", args.system)] if args.system else []
    messages.append(("human", prompt))
    llm = _llm(ctx)
    try:
        reply = answer(llm, messages, ctx, stream=args.stream, show=not args.json)
    finally:
        llm.close()
    if args.json:
        ctx.console.json(
            {"model": args.model, "text": reply.text, "finish_reason": reply.finish_reason, "usage": reply.usage}
        )
    return 0


def _chat(ctx: Context) -> int:
    args = ctx.args
    interactive = is_tty(ctx.stdin)
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing for input()
        ctx.console.print(ctx.console.style(f"{args.model} at {ctx.connection.url}; /exit or Ctrl-D leaves", "dim"))
    history: Messages = [("system", args.system)] if args.system else []
    llm = _llm(ctx)
    try:
        while (line := _read_turn(ctx, interactive)) is not None:
            text = line.strip()
            if text in EXIT_COMMANDS:
                break
            if not text:
                continue
            history.append(("human", text))
            reply = answer(llm, history, ctx, stream=args.stream, show=True)
            history.append(("ai", reply.text))
    finally:
        llm.close()
    return 0


def _read_turn(ctx: Context, interactive: bool) -> str | None:
    """The user's next message (None at the end of input)."""
    if interactive:
        try:
            return input(">>> ")
        except EOFError:
            ctx.console.print()
            return None
    line = ctx.stdin.readline()
    return line if line else None
