"""The ``xclient`` command line: ``main(argv)`` runs one command and returns its exit code.

Each command group lives in its own module (``_llm``: generate, chat; ``_retrieval``: embed, rerank;
``_infer``; ``_models``: models, health; ``_bench``; ``_serve``; ``_demo``), on what they share: ``_app`` (the
parser, the connection options, errors and exit codes), ``_output`` (UTF-8, colour, JSON, tables) and
``_inputs`` (texts, JSON, ``name=VALUE``). Heavy imports (LangChain, the local server) wait for the
command that needs them, so ``xclient --help`` is quick.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import _bench, _demo, _gateway, _infer, _llm, _models, _retrieval, _serve
from ._app import run

#: The command modules, in the order ``xclient --help`` lists their commands.
COMMAND_MODULES = (_llm, _retrieval, _infer, _models, _bench, _serve, _gateway, _demo)

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xclient`` with ``argv`` (default: ``sys.argv[1:]``); the exit code (0 ok, 1 server or model
    error, 2 usage error, 130 interrupted)."""
    return run(argv, COMMAND_MODULES)
