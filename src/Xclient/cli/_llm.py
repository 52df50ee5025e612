"""``xclient generate`` and ``xclient chat``: an LLM on the server, through the engine ChatMetaLM runs on.

The commands render the chat template and stream through :mod:`Xclient.llms._engine` directly, without
LangChain, so they start fast (``benchmarks/cli_start.py`` measures it); the answer is the same text
ChatMetaLM gives. Only a Jinja2 template (``--chat-template``) and HTTP streaming need the ``langchain``
extra's packages (jinja2, httpx).

Tokens are written as they come. Leaving a stream early (Ctrl-C) closes it, which cancels the request
on the server (gRPC: the stream's call; HTTP: the ``generate_stream`` connection). In ``xclient chat``
on a terminal, Ctrl-C during an answer stops that answer and returns to the prompt (the history keeps
the turn and the part of the answer already shown); Ctrl-C or Ctrl-D at the prompt leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import XclientValueError
from ._app import DEMO_LLM, ENV_MODEL, ENV_URL, Commands, Context, DefaultUrl, env
from ._inputs import read_text_file
from ._output import is_tty

if TYPE_CHECKING:
    from ..llms._engine import Engine, Settings
    from ..llms._templates import ChatTemplate

Messages = list[tuple[str, str]]  # (role, content): "system", "user", "assistant"
#: Tokens to generate at most when --max-tokens is not given (ChatMetaLM's default).
DEFAULT_MAX_TOKENS = 512

#: The chat's slash commands: name -> what it does (``/help`` prints this).
CHAT_COMMANDS = {
    "/help": "show these commands",
    "/clear": "forget the conversation (the system message stays)",
    "/system TEXT": "set the system message (an empty TEXT removes it)",
    "/exit": "leave (also /quit, /bye, or Ctrl-D or Ctrl-C at the prompt)",
}
EXIT_COMMANDS = ("/exit", "/quit", "/bye")


def add_commands(commands: Commands) -> None:
    # `stream_generate` is the name FastDeploy's fdclient gives the same command.
    for name, help in (
        ("generate", "generate an answer to one prompt with an LLM, streamed as it comes"),
        ("stream_generate", "the same as generate (fdclient's name for it)"),
    ):
        generate = commands.add(
            name,
            _generate,
            help=help,
            examples=[
                f"xclient {name} '用一句话介绍 Triton'",
                f"xclient {name} Qwen2-0.5B-Instruct 'Tell me a joke' --max-tokens 64 --temperature 0.7",
                f"echo '你好' | xclient {name} --json --url grpc://gpu-box:8001",
                f"FASTDEPLOY_MODEL_URL=gpu-box:8001 xclient {name} '你好'  # FastDeploy's server and model",
            ],
            json="one JSON object: model, text, finish_reason, usage",
        )
        generate.add_argument(
            "words",
            nargs="*",
            metavar="[MODEL] PROMPT",
            help="the model (optional, as in `ollama run MODEL PROMPT`) and the prompt (-, or none: all of stdin)",
        )
        _add_llm_options(generate)

    chat = commands.add(
        "chat",
        _chat,
        help="chat with an LLM, turn after turn (one message per line of stdin; /help lists the commands)",
        examples=[
            "xclient chat",
            "xclient chat Qwen2-0.5B-Instruct --system '你是一个简洁的助手'",
            "printf '你好\\n再说一遍\\n/exit\\n' | xclient chat --max-tokens 32",
        ],
    )
    chat.add_argument("model_arg", nargs="?", metavar="MODEL", help="the model (default: --model)")
    _add_llm_options(chat)


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=f"the model, if not given positionally (env {ENV_MODEL}; default {DEMO_LLM})")
    group.add_argument("--model-version", metavar="VERSION", help="default: the server's choice")
    group.add_argument("--system", metavar="TEXT", help="a system message before the conversation")
    group.add_argument(
        "--max-tokens", type=int, metavar="N", help=f"tokens to generate at most (default {DEFAULT_MAX_TOKENS})"
    )
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


# -- the model and its settings: one place ----------------------------------------------------------


#: FastDeploy's client (``fdclient``) reads its server, ``host:port`` (gRPC), from this variable.
ENV_FASTDEPLOY_URL = "FASTDEPLOY_MODEL_URL"
#: FastDeploy's model name, the default model when the server comes from FASTDEPLOY_MODEL_URL.
FASTDEPLOY_MODEL = "model"


def llm_target(ctx: Context, positional_model: str | None) -> tuple[str, Settings]:
    """Where an LLM command goes, decided in this one place: the model (positional, else ``--model``,
    else ``XCLIENT_MODEL``, else the demo LLM) and how to reach the server (``--url``, ``--api-key``,
    ``--timeout``, ``--model-version``). With neither ``--url`` nor ``XCLIENT_URL``, FastDeploy's
    ``FASTDEPLOY_MODEL_URL`` (``host:port``, gRPC) is the server, and its model ``model`` the default, as
    ``fdclient`` has them."""
    from ..llms._engine import Settings

    args, connection = ctx.args, ctx.connection
    if positional_model is not None and args.model is not None and positional_model != args.model:
        raise XclientValueError(f"two models given: {positional_model!r} and --model {args.model!r}; give one")
    default_model = DEMO_LLM
    fastdeploy = env(ENV_FASTDEPLOY_URL)
    if fastdeploy and isinstance(args.url, DefaultUrl) and env(ENV_URL) is None:
        address = fastdeploy.strip()
        connection = dataclasses.replace(connection, url=address if "://" in address else f"grpc://{address}")
        default_model = FASTDEPLOY_MODEL
    model = positional_model or args.model or env(ENV_MODEL, default_model) or default_model
    options: dict[str, Any] = {"model_version": args.model_version, "api_key": connection.api_key}
    if connection.timeout_s is not None:
        options.update(init_timeout_s=connection.timeout_s, inference_timeout_s=connection.timeout_s)
    settings = Settings(server_url=connection.url, options=options)
    return model, settings


@dataclasses.dataclass(frozen=True)
class Generator:
    """The LLM of one command: its model, template and sampling, and the engine's connection."""

    model: str
    template: ChatTemplate
    sampling: Any  # llms._backends.Sampling
    engine: Engine
    chosen_template: bool = False  # --chat-template given: the chat is rendered client-side for every backend

    @classmethod
    def of(cls, ctx: Context, positional_model: str | None) -> Generator:
        from ..llms._backends import Sampling, sampling_settings
        from ..llms._engine import Engine
        from ..llms._templates import resolve_template

        args = ctx.args
        model, settings = llm_target(ctx, positional_model)
        _check_range("--max-tokens", args.max_tokens, low=1)
        _check_range("--temperature", args.temperature, low=0)
        _check_range("--top-p", args.top_p, low=0, high=1, open_low=True)
        template = resolve_template(args.chat_template, model)
        stops = [*(args.stop or ()), *template.stop]
        sampling = Sampling(
            max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS,
            settings=sampling_settings({"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}),
            stop=tuple(dict.fromkeys(s for s in stops if s)),
        )
        return cls(model, template, sampling, Engine(settings), chosen_template=args.chat_template is not None)

    def pieces(self, messages: Messages, *, stream: bool) -> Iterator[Any]:
        """The answer's text pieces as they come, then its ``Ending`` (closing this iterator early cancels
        the request on the server)."""
        from ..llms._engine import Call, run

        call = Call(
            model=self.model,
            prompt=self.template.render(messages),
            sampling=self.sampling,
            stream=stream,
            turns=None if self.chosen_template else tuple(messages),  # for a backend with its own (FastDeploy)
        )
        return run(self.engine, call)

    def close(self) -> None:
        self.engine.close()


def _check_range(
    flag: str, value: float | None, *, low: float, high: float | None = None, open_low: bool = False
) -> None:
    if value is None:
        return
    if (value <= low if open_low else value < low) or (high is not None and value > high):
        bounds = f"{'>' if open_low else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise XclientValueError(f"{flag}: expected a number {bounds}, got {value:g}")


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None


def answer(
    llm: Generator, messages: Messages, ctx: Context, *, stream: bool, show: bool, texts: list[str] | None = None
) -> Reply:
    """The LLM's answer to ``messages``; with ``show``, written to stdout (piece by piece when streaming).
    An interruption (Ctrl-C) closes the stream, which cancels the request on the server, and propagates;
    ``texts`` then holds what came before it."""
    console = ctx.console
    texts = [] if texts is None else texts
    ending = None
    pieces = llm.pieces(messages, stream=stream)
    try:
        for piece in pieces:
            if isinstance(piece, str):
                texts.append(piece)
                if show and stream:
                    console.write(piece)
            else:
                ending = piece
                texts.append(piece.text)
                if show and stream and piece.text:
                    console.write(piece.text)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
        if show and stream and texts:
            console.print()
    text = "".join(texts)
    if show and not stream:
        console.print(text)
    if ending is None:
        return Reply(text, None, None)
    return Reply(text, ending.metadata.get("finish_reason"), ending.usage)


def _generate(ctx: Context) -> int:
    args = ctx.args
    words = list(args.words)
    if len(words) > 2:
        raise XclientValueError(
            f"expected [MODEL] PROMPT, got {len(words)} arguments: quote the prompt ('{' '.join(words[1:])}')"
        )
    prompt = words[-1] if words else "-"
    if prompt == "-":
        if is_tty(ctx.stdin):
            raise XclientValueError("no prompt: give it as an argument or on stdin")
        prompt = read_text_file("-", ctx.stdin).strip()
        if not prompt:
            raise XclientValueError("no prompt: stdin was empty (give the prompt as an argument or on stdin)")
    messages: Messages = [("system", args.system)] if args.system else []
    messages.append(("user", prompt))
    llm = Generator.of(ctx, words[0] if len(words) == 2 else None)
    try:
        reply = answer(llm, messages, ctx, stream=args.stream, show=not args.json)
    finally:
        llm.close()
    if args.json:
        ctx.console.json(
            {"model": llm.model, "text": reply.text, "finish_reason": reply.finish_reason, "usage": reply.usage}
        )
    return 0


# -- chat ---------------------------------------------------------------------------------------------


class _Leave(Exception):
    """The user leaves the chat."""


@dataclasses.dataclass
class Conversation:
    """The chat's state: the system message and the turns so far; slash commands act on it."""

    system: str | None
    turns: Messages = dataclasses.field(default_factory=list)

    def messages(self) -> Messages:
        return ([("system", self.system)] if self.system else []) + self.turns

    def command(self, line: str, ctx: Context) -> None:
        """Run a slash command (``/help``...); an unknown one is refused, never sent to the model."""
        name, _, rest = line.partition(" ")
        console = ctx.console
        if name in EXIT_COMMANDS:
            raise _Leave
        if name == "/help":
            width = max(len(usage) for usage in CHAT_COMMANDS)
            for usage, what in CHAT_COMMANDS.items():
                console.print(f"  {usage.ljust(width)}  {what}")
            console.print("  Ctrl-C during an answer stops it; lines not starting with / are sent to the model")
        elif name == "/clear":
            self.turns.clear()
            console.print(console.style("conversation cleared", "dim"))
        elif name == "/system":
            self.system = rest.strip() or None
            console.print(console.style("system message set" if self.system else "system message removed", "dim"))
        else:
            console.note(f"unknown command {name}: /help lists the commands (nothing was sent)")


def _chat(ctx: Context) -> int:
    args = ctx.args
    interactive = is_tty(ctx.stdin)
    llm = Generator.of(ctx, args.model_arg)
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing for input()
        ctx.console.print(
            ctx.console.style(f"{llm.model} at {ctx.connection.shown}; /help for commands, /exit leaves", "dim")
        )
    conversation = Conversation(args.system)
    try:
        while (line := _read_turn(ctx, interactive)) is not None:
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                conversation.command(text, ctx)
                continue
            conversation.turns.append(("user", text))
            shown: list[str] = []
            try:
                answer(llm, conversation.messages(), ctx, stream=args.stream, show=True, texts=shown)
            except KeyboardInterrupt:
                if not interactive:
                    raise
                ctx.console.note("(stopped)")
            conversation.turns.append(("assistant", "".join(shown)))  # an interrupted answer: what came
    except _Leave:
        pass
    finally:
        llm.close()
    return 0


def _read_turn(ctx: Context, interactive: bool) -> str | None:
    """The user's next message (None: leave, at the end of input, or on Ctrl-D or Ctrl-C at the prompt)."""
    if not interactive:
        line = ctx.stdin.readline()
        return line if line else None
    try:
        return input(">>> ")
    except (EOFError, KeyboardInterrupt):
        ctx.console.print()
        return None
