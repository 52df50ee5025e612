"""What every ``xclient`` command shares, written once: the parser and its conventions (``--help``
with examples), the connection options and how they map onto the library, and the run of a command
(exit codes, one-line errors, ``--debug``, Ctrl-C, secrets kept out of every message).

Exit codes: 0 ok, 1 a server or model error, 2 a usage error (argparse's, and
:class:`~Xclient.exceptions.XclientValueError`), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .._replica_urls import ENV_URL, check_urls, client_target, first_url, split_urls, url_tuple
from ..client._auth import redact
from ..client._base import check_timeout
from ..client._urls import DEFAULT_PORTS
from ..exceptions import XclientError, XclientValueError
from ._output import Console, first_line, use_utf8

if TYPE_CHECKING:
    from ..client import ServerClient

ENV_API_KEY = "XCLIENT_API_KEY"
ENV_MODEL = "XCLIENT_MODEL"
DEFAULT_URL = "http://localhost:8000"
#: The LLM of the demo models (and of ``xclient serve``): generate and chat's model without XCLIENT_MODEL.
DEMO_LLM = "Qwen2-0.5B-Instruct"

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable; unset or blank means ``default``."""
    return os.environ.get(name, "").strip() or default


# -- the connection ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where the server is and how to talk to it: ``--url`` (repeated, or comma-separated, for several
    replicas), ``--api-key``, ``--timeout``, checked once and handed to each part of the library under its
    own option names.

    ``url`` is what the clients take: one normalized URL (a str), or the tuple of the replicas' URLs;
    :attr:`urls` is always the tuple."""

    url: str | Sequence[str]
    api_key: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        texts = [self.url] if isinstance(self.url, str) else list(self.url)
        given = [u for text in texts for u in split_urls(text)] or texts
        field = ENV_URL if isinstance(self.url, DefaultUrl) else "--url"  # where the URLs came from
        urls = [str(u) for u in check_urls(field, given[0] if len(given) == 1 else given)]
        object.__setattr__(self, "url", client_target(urls))  # no scheme: HTTP, for every command
        if self.timeout_s is not None:
            object.__setattr__(self, "timeout_s", check_timeout("--timeout", self.timeout_s))

    def __repr__(self) -> str:
        return f"Connection({self.url!r})"

    @property
    def urls(self) -> tuple[str, ...]:
        """Every replica's URL (normalized: ``grpc://host:8001``)."""
        return url_tuple(self.url)

    @property
    def shown(self) -> str:
        """The URLs, for a message."""
        return ", ".join(self.urls)

    @property
    def protocol(self) -> str:
        return first_url(self.url).protocol

    def grpc(self) -> Connection:
        """This connection over gRPC (what streams need): itself, or each host on Triton's default gRPC port."""
        if self.protocol == "grpc":
            return self
        return dataclasses.replace(
            self, url=tuple(f"grpc://{first_url(url).host}:{DEFAULT_PORTS['grpc']}" for url in self.urls)
        )

    def one(self, url: str) -> Connection:
        """The same connection to one of its replicas only."""
        return dataclasses.replace(self, url=url)

    def client_options(self) -> dict[str, Any]:
        """Options of the model clients (ModelClient, DecoupledModelClient...)."""
        options: dict[str, Any] = {"api_key": self.api_key}
        if self.timeout_s is not None:
            options.update(init_timeout_s=self.timeout_s, inference_timeout_s=self.timeout_s)
        return options

    def server(self) -> ServerClient:
        """A ServerClient for health, metadata and model management (load and unload included)."""
        from ..client import ServerClient

        if self.timeout_s is None:
            return ServerClient(self.url, api_key=self.api_key)
        return ServerClient(self.url, api_key=self.api_key, timeout_s=self.timeout_s, load_timeout_s=self.timeout_s)

    def adapter_options(self) -> dict[str, Any]:
        """Fields of MetaLMEmbeddings and MetaLMRerank."""
        return {"base_url": self._field_url, **self.client_options()}

    def llm_options(self) -> dict[str, Any]:
        """Fields of ChatMetaLM."""
        options: dict[str, Any] = {"server_url": self._field_url, "api_key": self.api_key}
        if self.timeout_s is not None:
            options.update(timeout=self.timeout_s, init_timeout_s=self.timeout_s)
        return options

    @property
    def _field_url(self) -> str | list[str]:
        """``url`` as the LangChain classes' ``base_url`` field takes it: a str, or a list."""
        return self.url if isinstance(self.url, str) else list(self.url)


class Context:
    """What a command handler gets: the parsed arguments, the console, stdin, and the connection."""

    def __init__(self, args: argparse.Namespace, console: Console, stdin: TextIO) -> None:
        self.args = args
        self.console = console
        self.stdin = stdin

    @functools.cached_property
    def connection(self) -> Connection:
        return Connection(self.args.url, self.args.api_key or None, self.args.timeout)


Handler = Callable[[Context], "int | None"]


# -- the parser ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Help keeps the examples' layout; no abbreviated options (``--api`` is not ``--api-key``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _epilog(lines: Sequence[str]) -> str:
    """An argparse epilog listing example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class DefaultUrl(str):
    """``--url``'s default (``XCLIENT_URL``, else the default URL): a type of its own, so that a command
    can tell the default from a URL given on the command line."""


class UrlsAction(argparse.Action):
    """``--url`` may be repeated (one replica each, or comma-separated ones): the URLs given replace the
    default (argparse's ``append`` would add to it)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        given = getattr(namespace, self.dest, None)
        urls = list(given) if isinstance(given, list) else []
        setattr(namespace, self.dest, [*urls, values])


URL_HELP = (
    "http(s)://host:port or grpc(s)://host:port; no scheme: gRPC on port 8001, HTTP otherwise; repeat it "
    "(or separate with commas) for several replicas of one server"
)


def add_connection_options(parser: argparse.ArgumentParser, *, url_help: str | None = None) -> None:
    """``--url`` (repeatable), ``--api-key`` and ``--timeout``; ``url_help`` replaces the default (from the
    environment)."""
    group = parser.add_argument_group("connection")
    if url_help is None:
        group.add_argument(
            "--url",
            action=UrlsAction,
            metavar="URL",
            default=DefaultUrl(env(ENV_URL, DEFAULT_URL)),
            help=f"{URL_HELP} (env {ENV_URL}, comma-separated; default {DEFAULT_URL})",
        )
    else:
        group.add_argument("--url", action=UrlsAction, metavar="URL", default=None, help=url_help)
    add_api_key_option(group, f"sent as 'Authorization: Bearer KEY' (env {ENV_API_KEY}); never shown")
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="deadline of each call (default: 30 s to connect, 60 s per request, 600 s to load a model)",
    )


def add_api_key_option(group: argparse._ActionsContainer, help: str) -> None:
    group.add_argument("--api-key", default=env(ENV_API_KEY), metavar="KEY", help=help)


def add_rest(parser: argparse.ArgumentParser, dest: str, **kwargs: Any) -> None:
    """A positional that takes every remaining argument, also those after an option: argparse alone
    leaves ``b`` over in ``xclient embed a --sparse b`` (see :func:`_parse`)."""
    parser.add_argument(dest, nargs="*", **kwargs)
    parser.set_defaults(rest_dest=dest)


class Commands:
    """Adds subcommands that share the conventions: examples in ``--help``, ``--debug``, connection options."""

    def __init__(self, subparsers: argparse._SubParsersAction) -> None:
        self._subparsers = subparsers

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        help: str,
        examples: Sequence[str],
        json: str | None = None,
        connection: bool = True,
    ) -> argparse.ArgumentParser:
        """A subcommand; its handler returns an exit code (None: 0). ``json``: what ``--json`` prints,
        for commands whose output is structured."""
        parser = self._subparsers.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", epilog=_epilog(examples)
        )
        parser.set_defaults(handler=handler, command_parser=parser)
        if json is not None:
            parser.add_argument("--json", action="store_true", help=f"print {json} (for scripts)")
        if connection:
            add_connection_options(parser)
        parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
        return parser

    def group(self, name: str, *, help: str, examples: Sequence[str]) -> Commands:
        """A subcommand with subcommands of its own (``xclient models list``)."""
        parser = self._subparsers.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", epilog=_epilog(examples)
        )
        subparsers = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
        return Commands(subparsers)


class CommandModule(Protocol):
    """A module of commands (``_llm``, ``_models``...): it adds them to the parser."""

    def add_commands(self, commands: Commands) -> None: ...


def build_parser(modules: Sequence[CommandModule]) -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="xclient",
        description="Talk to a Triton Inference Server from the terminal: LLMs, embeddings, rerankers, any\n"
        "model; manage its models; or serve the demo models locally.",
        epilog=_epilog(
            [
                "xclient demo                                   # the whole tour on a local server",
                "xclient serve &                                # the demo models on :8000 and :8001",
                f"export {ENV_URL}=http://localhost:8000",
                "xclient generate '介绍一下 Triton' --max-tokens 64",
                "xclient models list",
            ]
        )
        + f"\n\nenvironment: {ENV_URL}, {ENV_API_KEY}, {ENV_MODEL} (generate and chat), NO_COLOR",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"xclient {__version__}",
        help="show Xclient's, tritonclient's and (with --url or XCLIENT_URL) the server's version, and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = Commands(subparsers)
    for module in modules:
        module.add_commands(commands)
    return parser


# -- running a command ---------------------------------------------------------------------------------


def secrets_in(argv: Sequence[str]) -> list[str]:
    """The API keys a command line carries (after ``--api-key``, or in ``XCLIENT_API_KEY``): never shown."""
    found = [key] if (key := env(ENV_API_KEY)) else []
    for before, item in zip(["", *argv], argv, strict=False):
        if item.startswith("--api-key="):
            found.append(item.partition("=")[2])
        elif before.startswith("--api"):  # also a mistyped --api-kye, which argparse would echo
            found.append(item)
    return [s for s in found if s]


def run(argv: Sequence[str] | None, modules: Sequence[CommandModule]) -> int:
    """Parse ``argv`` and run its command; the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    use_utf8(sys.stdin, sys.stdout, sys.stderr)
    console = Console(sys.stdout, sys.stderr, secrets_in(argv))
    if (server := _version_request(argv)) is not False:
        for name, value in versions(server):
            console.print(f"{name} {value}")
        return EXIT_OK
    parsed = _parse(build_parser(modules), argv, console)
    if isinstance(parsed, int):
        return parsed
    with _debug_logging(parsed.debug, console):
        return _call(parsed.handler, Context(parsed, console, sys.stdin), debug=parsed.debug)


def _parse(parser: argparse.ArgumentParser, argv: list[str], console: Console) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of ``--help``, ``--version`` or a usage error (argparse
    echoes values in its errors: they are redacted)."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args, extras = parser.parse_known_args(argv)
            rest: str | None = getattr(args, "rest_dest", None)
            if extras and (rest is None or any(e.startswith("-") and e != "-" for e in extras)):
                command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
                command_parser.error(f"unrecognized arguments: {' '.join(extras)}")  # the subcommand's usage
            if extras and rest is not None:
                getattr(args, rest).extend(extras)
            return args
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    finally:
        if errors.getvalue():
            console.note(errors.getvalue().rstrip("\n"))


def _call(handler: Handler, ctx: Context, *, debug: bool) -> int:
    console = ctx.console
    try:
        return handler(ctx) or EXIT_OK
    except KeyboardInterrupt:
        console.note("\ninterrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `xclient embed ... | head`: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # every failure becomes one line and an exit code
        code, message = describe_error(e)
        if debug:
            console.note("".join(traceback.format_exception(e)).rstrip())
            console.error(message.strip())
        else:
            line, more = first_line(message)
            console.error(line + (" (--debug shows more)" if more else ""))
        return code


def describe_error(error: BaseException) -> tuple[int, str]:
    """The exit code and message of a failure: usage errors 2, everything else 1."""
    if isinstance(error, XclientValueError):
        return EXIT_USAGE, cli_hints(str(error))
    if isinstance(error, XclientError):
        return EXIT_ERROR, cli_hints(str(error))
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(error, pydantic.ValidationError):  # a LangChain class's field
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return EXIT_USAGE, "; ".join(problems)
    if isinstance(error, ImportError):  # a missing extra: say which
        missing = (error.name or "").partition(".")[0]
        if missing in LANGCHAIN_EXTRA_MODULES:
            return (
                EXIT_ERROR,
                f"this command needs the 'langchain' extra ({missing} is missing): {LANGCHAIN_EXTRA_HINT}",
            )
        return EXIT_ERROR, str(error)
    return EXIT_ERROR, f"{type(error).__name__}: {error}"


#: The modules of the ``langchain`` extra: a command that misses one names the extra.
LANGCHAIN_EXTRA_MODULES = frozenset({"langchain_core", "httpx", "jinja2"})
LANGCHAIN_EXTRA_HINT = "pip install 'llmops-xclient[langchain]'"

#: The library's hints name its options; the CLI's name its flags.
_FLAG_HINTS = {
    "api_key=...": "--api-key KEY",
    "base_url=...": "--url URL",
    "server_url=...": "--url URL",
    "url=...": "--url URL",
    "timeout=...": "--timeout SECONDS",
    "timeout_s=...": "--timeout SECONDS",
    "init_timeout_s=...": "--timeout SECONDS",
    "inference_timeout_s=...": "--timeout SECONDS",
    "model_version=...": "--model-version VERSION",
}
_FLAG_HINT_PATTERN = re.compile(r"\b(" + "|".join(re.escape(option) for option in _FLAG_HINTS) + ")")


def cli_hints(message: str) -> str:
    """``message`` with the library's option hints (``api_key=...``) as the CLI's flags (``--api-key KEY``)."""
    return _FLAG_HINT_PATTERN.sub(lambda match: _FLAG_HINTS[match.group(1)], message)


# -- xclient --version --------------------------------------------------------------------------------

#: How long ``xclient --version`` waits for the server: it is a courtesy, not a health check.
VERSION_SERVER_TIMEOUT_S = 2.0


def _version_request(argv: Sequence[str]) -> Connection | None | bool:
    """For ``xclient --version [--url URL] [--api-key KEY]``: the server to ask (None: none given), or
    False when the command line is something else."""
    if "--version" not in argv:
        return False
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--version", action="store_true")
    parser.add_argument("--url", action=UrlsAction, default=env(ENV_URL))
    parser.add_argument("--api-key", default=env(ENV_API_KEY))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args, extras = parser.parse_known_args(argv)
    except SystemExit:
        return False
    if extras or not args.version:
        return False
    if not args.url:
        return None
    try:
        return Connection(args.url, args.api_key or None, VERSION_SERVER_TIMEOUT_S)
    except XclientError:
        return None


def versions(connection: Connection | None | bool) -> list[tuple[str, str]]:
    """(name, version) of Xclient, tritonclient and, best effort, the server at ``connection``."""
    from importlib import metadata

    from .. import __version__

    try:
        tritonclient = metadata.version("tritonclient")
    except metadata.PackageNotFoundError:
        tritonclient = "not installed"
    found = [("xclient", __version__), ("tritonclient", tritonclient)]
    if isinstance(connection, Connection):
        try:
            with connection.server() as server:
                info = server.metadata()
            found.append(("server", f"{info.get('name', '?')} {info.get('version', '?')} at {connection.shown}"))
        except XclientError as e:
            found.append(("server", f"not reached at {connection.shown} ({first_line(str(e))[0]})"))
    return found


class _RedactingFormatter(logging.Formatter):
    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


@contextlib.contextmanager
def _debug_logging(enabled: bool, console: Console) -> Iterator[None]:
    """With ``--debug``, every logger's records on stderr (secrets redacted), for this command only."""
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(console.stderr)
    handler.setFormatter(_RedactingFormatter(console.secrets))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
