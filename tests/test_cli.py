"""The xclient command line against the real local server: in-process through ``main(argv)`` where
possible, through a real ``python -m Xclient`` subprocess for signals, locales and the full demo."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from Xclient.cli import COMMAND_MODULES, main
from Xclient.cli._app import build_parser
from Xclient.cli._output import Console, width
from Xclient.server import LocalTritonServer

API_KEY = "sk-cli-test-4f9a8b7c"
#: A model of tests/models cheap to unload and load again.
CHEAP_MODEL = "optional"


@dataclasses.dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]


Xclient = Callable[..., Result]


@pytest.fixture
def xclient(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Xclient:
    """Run ``xclient ARGS...`` in this process; ``stdin=`` feeds its standard input."""
    for name in ("XCLIENT_URL", "XCLIENT_API_KEY", "XCLIENT_MODEL", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: object, stdin: str | None = None) -> Result:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def http_url(triton_server: LocalTritonServer) -> str:
    return triton_server.http_url


@pytest.fixture
def grpc_url(triton_server: LocalTritonServer) -> str:
    return triton_server.grpc_url


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
    return {**env, **extra}


def run_module(*argv: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    """``python -m Xclient ARGS...`` in a subprocess; its output decoded as UTF-8."""
    done = subprocess.run(
        [sys.executable, "-m", "Xclient", *argv],
        input=None if input is None else input.encode("utf-8"),
        capture_output=True,
        env=env or subprocess_env(),
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8"))


def popen_module(*argv: str, **options: Any) -> subprocess.Popen[Any]:
    """``python -m Xclient ARGS...`` started, taking SIGINT as a terminal's foreground job does (run from a
    shell's background job, this process ignores SIGINT, and a child would inherit that)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "Xclient", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
            **options,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


# -- conventions ----------------------------------------------------------------------------------------


def _every_command(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _every_command(sub, (*prefix, name))


def test_every_command_has_help_with_examples(xclient: Xclient) -> None:
    commands = list(_every_command(build_parser(COMMAND_MODULES)))
    assert {("generate",), ("chat",), ("embed",), ("rerank",), ("infer",), ("health",), ("serve",), ("demo",)} <= set(
        commands
    )
    assert {("models", name) for name in ("list", "config", "load", "unload", "stats")} <= set(commands)
    for command in commands:
        result = xclient(*command, "--help")
        assert result.code == 0, command
        assert "examples:\n  xclient" in result.out, command


def test_usage_errors_exit_2_with_one_line(xclient: Xclient, http_url: str) -> None:
    assert xclient().code == 2  # no command
    assert xclient("models").code == 2  # no subcommand
    result = xclient("generate", "hi", "--top-p", "abc")
    assert result.code == 2 and "invalid float value" in result.err
    result = xclient("health", "--url", "ftp://host")
    assert result.code == 2 and result.err.startswith("error: Invalid server URL") and "Traceback" not in result.err
    assert xclient("infer", "text", "INPUT_TEXT", "--url", http_url).code == 2  # not NAME=VALUE
    result = xclient("infer", "text", "NO_SUCH_INPUT=1", "--url", http_url)
    assert result.code == 2 and "has no input 'NO_SUCH_INPUT'" in result.err
    assert xclient("generate", "hi", "--top-p", "5", "--url", http_url).code == 2  # a ChatMetaLM field
    assert xclient("models", "list", "--timeout", "0", "--url", http_url).code == 2
    result = xclient("embed", "--file", "/no/such/file.txt", "--url", http_url)
    assert result.code == 2 and "cannot read /no/such/file.txt" in result.err


def test_server_and_model_errors_exit_1_with_one_line(xclient: Xclient, dead_url: str, http_url: str) -> None:
    result = xclient("health", "--url", dead_url, "--timeout", "2")
    assert result.code == 1 and result.err.startswith("error: Cannot reach") and len(result.err.splitlines()) == 1
    result = xclient("infer", "no_such_model", "x=1", "--url", http_url)
    assert result.code == 1 and "no_such_model" in result.err and "Traceback" not in result.err
    debug = xclient("infer", "no_such_model", "x=1", "--url", http_url, "--debug")
    assert debug.code == 1 and "Traceback (most recent call last)" in debug.err


def test_api_key_is_never_shown(xclient: Xclient, http_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [
        xclient("infer", "no_such_model", "x=1", "--url", http_url, "--api-key", API_KEY, "--debug"),
        xclient("generate", "hi", "--top-p", "5", "--url", http_url, f"--api-key={API_KEY}", "--debug"),
        xclient("models", "list", "--api-kye", API_KEY),  # mistyped: argparse echoes unknown arguments
        xclient("generate", "hi", "--top-k", API_KEY, "--api-key", API_KEY),  # argparse echoes bad values
    ]
    monkeypatch.setenv("XCLIENT_API_KEY", API_KEY)
    runs.append(xclient("health", "--url", "http://127.0.0.1:1", "--timeout", "1", "--debug"))
    assert [r.code for r in runs] == [1, 2, 2, 2, 1]
    for result in runs:
        assert API_KEY not in result.out + result.err
    assert "--api-kye ***" in runs[2].err


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Console(Terminal(), Terminal()).style("ok", "green") == "\033[32mok\033[0m"
    assert Console(io.StringIO(), io.StringIO()).style("ok", "green") == "ok"
    monkeypatch.setenv("NO_COLOR", "1")
    assert Console(Terminal(), Terminal()).style("ok", "green") == "ok"


# -- health and models ------------------------------------------------------------------------------------


def test_health_human_and_json(xclient: Xclient, url: str) -> None:
    human = xclient("health", "--url", url)
    assert human.code == 0 and "ready       yes" in human.out and "triton 2." in human.out
    result = xclient("health", "--url", url, "--json")
    assert result.code == 0
    health = result.json()
    assert health["live"] is True and health["ready"] is True and health["metadata"]["name"] == "triton"


def test_models_list_config_and_stats(xclient: Xclient, http_url: str, grpc_url: str) -> None:
    listing = xclient("models", "list", "--url", grpc_url, "--json")
    models = {(m["name"], m["version"]): m["state"] for m in listing.json()}
    assert models[("text", "1")] == "READY" and models[("versioned", "2")] == "READY"
    human = xclient("models", "list", "--url", http_url)
    assert human.out.splitlines()[0].split() == ["model", "version", "state", "reason"]
    config = xclient("models", "config", "text", "--url", http_url)
    assert "INPUT_TEXT  BYTES  [1]" in config.out and "max_batch_size 8" in config.out
    assert xclient("models", "config", "text", "--url", grpc_url, "--json").json()["max_batch_size"] == 8
    assert xclient("infer", "text", "INPUT_TEXT=统计", "--url", http_url).code == 0
    stats = xclient("models", "stats", "text", "--url", http_url, "--json").json()
    assert stats[0]["name"] == "text" and int(stats[0]["inference_count"]) >= 1
    table = xclient("models", "stats", "text", "--url", grpc_url)
    assert table.code == 0 and table.out.splitlines()[1].startswith("text ")


def test_models_unload_waits_until_gone_then_load_brings_it_back(xclient: Xclient, http_url: str, tmp_path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(xclient("models", "config", CHEAP_MODEL, "--url", http_url, "--json").out, "utf-8")
    try:
        assert xclient("models", "unload", CHEAP_MODEL, "--url", http_url).out == f"unloaded {CHEAP_MODEL}\n"
        states = {m["name"]: m["state"] for m in xclient("models", "list", "--url", http_url, "--json").json()}
        assert states[CHEAP_MODEL] == "UNAVAILABLE"  # gone, not still UNLOADING
        assert xclient("infer", CHEAP_MODEL, "a=[1.0]", "--url", http_url).code == 1
    finally:
        loaded = xclient("models", "load", CHEAP_MODEL, "--config", config_file, "--url", http_url)
    assert loaded.code == 0 and loaded.out == f"loaded {CHEAP_MODEL} with the given config\n"
    assert xclient("infer", CHEAP_MODEL, "a=[1.0]", "--url", http_url).code == 0


def test_unloading_a_model_the_server_does_not_have_is_an_error(xclient: Xclient, url: str) -> None:
    result = xclient("models", "unload", "没有这个模型", "--url", url)
    assert result.code == 1 and result.out == ""
    assert result.err == "error: cannot unload '没有这个模型': the server's repository has no such model\n"
    assert xclient("terminate", "no_such_model", "--url", url).code == 1


def test_load_without_config_keeps_the_earlier_override(xclient: Xclient, http_url: str, tmp_path) -> None:
    """What `xclient models load --help` and the README say: an override stays until the next --config."""
    original = xclient("models", "config", CHEAP_MODEL, "--url", http_url, "--json").json()
    override = tmp_path / "override.json"
    override.write_text(json.dumps({**original, "max_batch_size": 4}), "utf-8")
    restore = tmp_path / "original.json"
    restore.write_text(json.dumps(original), "utf-8")
    try:
        assert xclient("models", "load", CHEAP_MODEL, "--config", override, "--url", http_url).code == 0
        again = xclient("models", "load", CHEAP_MODEL, "--url", http_url)
        assert again.code == 0 and "an earlier --config stays" in again.out
        config = xclient("models", "config", CHEAP_MODEL, "--url", http_url, "--json").json()
        assert config["max_batch_size"] == 4
    finally:
        assert xclient("models", "load", CHEAP_MODEL, "--config", restore, "--url", http_url).code == 0
    assert xclient("models", "config", CHEAP_MODEL, "--url", http_url, "--json").json()["max_batch_size"] == 8


def test_xinference_and_ollama_aliases_of_models_commands(xclient: Xclient, http_url: str) -> None:
    listed = xclient("models", "list", "--url", http_url, "--json").json()
    for alias in ("list", "ps"):
        assert xclient(alias, "--url", http_url, "--json").json() == listed
    try:
        assert xclient("terminate", CHEAP_MODEL, "--url", http_url).out == f"unloaded {CHEAP_MODEL}\n"
        assert xclient("launch", CHEAP_MODEL, "--url", http_url).code == 0
        assert xclient("unload", CHEAP_MODEL, "--url", http_url).code == 0
    finally:
        assert xclient("load", CHEAP_MODEL, "--url", http_url).code == 0
    assert xclient("infer", CHEAP_MODEL, "a=[1.0]", "--url", http_url).code == 0
    assert "The same as `xclient models list`" in xclient("ps", "--help").out


def test_tables_align_on_a_colour_terminal() -> None:
    out = io.StringIO()
    console = Console(out, io.StringIO())
    console.color = True
    console.table(["model", "state", "reason"], [["文本", console.style("READY", "green"), "x"], ["ab", "-", "y"]])
    assert "\x1b[32mREADY\x1b[0m" in out.getvalue()
    header, first, second = (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in out.getvalue().splitlines())
    # the last column starts at the same display column on every line (文本 takes 4, the colour codes 0)
    assert width(header[: header.index("reason")]) == width(first[: first.index("x")]) == second.index("y") == 14


def test_infer_chinese_text_printed_and_as_json(xclient: Xclient, url: str) -> None:
    human = xclient("infer", "text", "INPUT_TEXT=你好 world", "--url", url)
    assert human.code == 0 and '["你好 WORLD"]' in human.out and "LENGTH  INT32  [1]    [8]" in human.out
    outputs = xclient("infer", "text", "--batch", 'INPUT_TEXT=[["北京"], ["abc"]]', "--url", url, "--json").json()
    assert outputs == {"UPPER": [["北京"], ["ABC"]], "LENGTH": [[2], [3]]}


def test_infer_npy_inputs_and_output_dir(xclient: Xclient, http_url: str, tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.array([1.5, 2.5], dtype=np.float32))
    out = tmp_path / "out"
    inputs = [f"a={tmp_path / 'a.npy'}", "b=[1, 1]"]
    result = xclient("infer", CHEAP_MODEL, *inputs, "--output-dir", out, "--url", http_url)
    assert result.code == 0 and f"{out / 'sum.npy'}\n" in result.out
    assert np.load(out / "sum.npy").tolist() == [2.5, 3.5] and np.load(out / "b_given.npy").tolist() == [True]
    assert xclient("infer", "text", "INPUT_TEXT=你好", "--output-dir", out, "--url", http_url).code == 0
    assert np.load(out / "UPPER.npy", allow_pickle=False)[0].decode("utf-8") == "你好"  # no pickle needed


def test_infer_streams_a_decoupled_model_over_grpc(xclient: Xclient, http_url: str, grpc_url: str) -> None:
    argv = ["infer", "Qwen2-0.5B-Instruct", "text_input=你好", 'sampling_parameters={"max_tokens": 3}', "stream=true"]
    records = xclient(*argv, "--url", grpc_url, "--json").records()
    assert [r["text_output"] for r in records] == [["你"], ["好"], ["！"]]
    result = xclient(*argv, "--url", http_url)
    assert result.code == 2 and "over gRPC only" in result.err


def test_infer_labels_every_response_of_a_stream_the_first_too(xclient: Xclient, http_url: str, grpc_url: str) -> None:
    argv = ["infer", "Qwen2-0.5B-Instruct", "text_input=你好", 'sampling_parameters={"max_tokens": 3}', "stream=true"]
    out = xclient(*argv, "--url", grpc_url).out
    labels = [line for line in out.splitlines() if line.startswith("-- response")]
    assert labels == ["-- response 1", "-- response 2", "-- response 3"] and out.startswith("-- response 1\n")
    assert "-- response" not in xclient("infer", "text", "INPUT_TEXT=你好", "--url", http_url).out  # one answer


def test_usage_errors_print_the_subcommands_usage(xclient: Xclient) -> None:
    for argv, usage in (
        (["embed", "a", "--bogus"], "usage: xclient embed"),
        (["models", "unload", "x", "--bogus"], "usage: xclient models unload"),
        (["generate", "hi", "--top-p", "abc"], "usage: xclient generate"),
        (["models", "lst"], "usage: xclient models"),
    ):
        result = xclient(*argv)
        assert result.code == 2 and result.err.startswith(usage + " "), argv


def test_error_hints_name_cli_flags() -> None:
    """A refused key: the library's hint says ``api_key=...``, the CLI's says ``--api-key`` (a second keyed
    server is not started for this: the library's real translation of a 401 is used)."""
    from tritonclient.utils import InferenceServerException

    from Xclient.cli._app import describe_error
    from Xclient.client._transport import CallContext, translate_error
    from Xclient.client._urls import parse_url

    refused = InferenceServerException("This API is restricted", status="401")
    error = translate_error(refused, CallContext(parse_url("http://box:8000"), "text"), "inference", 60.0)
    assert "api_key=..." in str(error)
    code, message = describe_error(error)
    assert code == 1 and "--api-key KEY" in message and "api_key=" not in message


def test_version_shows_xclient_tritonclient_and_the_servers(xclient: Xclient, url: str, dead_url: str) -> None:
    from importlib import metadata

    import Xclient as package

    alone = xclient("--version")
    assert alone.code == 0
    assert alone.out == f"xclient {package.__version__}\ntritonclient {metadata.version('tritonclient')}\n"
    with_server = xclient("--version", "--url", url)
    assert with_server.out.startswith(alone.out) and with_server.out.splitlines()[2].startswith("server triton 2.")
    unreachable = xclient("--version", "--url", dead_url)
    assert unreachable.code == 0 and unreachable.out.splitlines()[2].startswith("server not reached at")


# -- embed and rerank -------------------------------------------------------------------------------------


def test_embed_texts_from_arguments_file_and_stdin(xclient: Xclient, http_url: str, tmp_path) -> None:
    texts = ["什么是向量检索？", "A cat sits on the mat"]
    records = xclient("embed", *texts, "--url", http_url, "--sparse").records()
    assert [r["index"] for r in records] == [0, 1] and [r["text"] for r in records] == texts
    assert all(len(r["dense"]) == 384 and isinstance(r["sparse"], dict) for r in records)
    assert records[1]["sparse"] and min(records[1]["sparse"].values()) >= 0
    (tmp_path / "texts.txt").write_text("\ufeff" + "\n".join(texts) + "\n\n", "utf-8")  # a BOM, a blank line
    from_file = xclient("embed", "-f", tmp_path / "texts.txt", "--url", http_url).records()
    from_stdin = xclient("embed", "--url", http_url, stdin="\n".join(texts)).records()
    assert [r["dense"] for r in from_file] == [r["dense"] for r in from_stdin] == [r["dense"] for r in records]
    assert "sparse" not in from_file[0]


def test_embed_shows_progress_on_large_inputs_on_a_terminal(
    xclient: Xclient, http_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from Xclient.cli import _retrieval

    assert "Embedding" not in xclient("embed", "a", "b", "c", "--url", http_url).err
    monkeypatch.setattr(_retrieval, "PROGRESS_MIN_TEXTS", 3)
    monkeypatch.setattr(_retrieval, "is_tty", lambda stream: True)
    assert "Embedding" in xclient("embed", "a", "b", "c", "--url", http_url).err


def test_rerank_ranks_best_first(xclient: Xclient, url: str) -> None:
    passages = "Bananas are rich in potassium.\n今天天气很好\nParis is the capital and largest city of France.\n"
    ranked = xclient("rerank", "--query", "What is the capital of France?", "--json", "--url", url, stdin=passages)
    rows = ranked.json()
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["index"] == 2 and rows[0]["text"].startswith("Paris")
    assert rows[0]["score"] > rows[1]["score"] > rows[2]["score"]
    top = xclient("rerank", "-q", "天气", "--top-n", "1", "--url", url, stdin=passages)
    assert (
        top.code == 0
        and len(top.out.splitlines()) == 2
        and top.out.splitlines()[0].split()
        == [
            "#",
            "score",
            "index",
            "text",
        ]
    )
    assert "今天天气很好" in xclient("rerank", "-q", "天气", "--url", url, stdin=passages).out


def test_rerank_puts_the_chinese_answer_first(xclient: Xclient, url: str) -> None:
    passages = "今天天气很好。\n向量检索把文本表示成向量，再按相似度找出最相关的文档。\n我喜欢吃苹果。\n"
    ranked = xclient("rerank", "-q", "什么是向量检索", "--url", url, "--json", stdin=passages).json()
    assert [r["text"] for r in ranked][0] == "向量检索把文本表示成向量，再按相似度找出最相关的文档。"
    assert ranked[0]["score"] > ranked[1]["score"]


def test_sparse_vector_of_chinese_the_vocabulary_does_not_know_is_not_empty(xclient: Xclient, url: str) -> None:
    records = xclient("embed", "--sparse", "你好", "你们好", "--url", url).records()
    hello, you_all = records[0]["sparse"], records[1]["sparse"]
    assert len(hello) == 2 and set(hello) <= set(you_all)  # 你 and 好: one character-level entry each
    assert all(weight > 0 for weight in hello.values())


# -- generate and chat ------------------------------------------------------------------------------------


def test_generate_streams_chinese(xclient: Xclient, url: str) -> None:
    streamed = xclient("generate", "你好，介绍一下你自己", "--max-tokens", 12, "--url", url)
    assert streamed.code == 0 and streamed.out.startswith("你好！我是Qwen2-0.5B-Instruct")
    assert streamed.out.endswith("\n")
    whole = xclient("generate", "你好，介绍一下你自己", "--max-tokens", 12, "--no-stream", "--url", url)
    assert whole.out == streamed.out


def test_generate_json_with_stop_words_and_prompt_from_stdin(xclient: Xclient, grpc_url: str) -> None:
    argv = ["generate", "--stop", "Triton", "--stop", "never", "--json", "--temperature", "0.5", "--top-k", "5"]
    reply = xclient(*argv, "--top-p", "0.9", "--url", grpc_url, stdin="Tell me about Triton\n").json()
    assert reply["finish_reason"] == "stop" and reply["text"].endswith("running on ") and "Triton" not in reply["text"]
    assert reply["model"] == "Qwen2-0.5B-Instruct" and reply["usage"]["output_tokens"] > 0


def test_generate_and_chat_take_the_model_positionally(xclient: Xclient, grpc_url: str) -> None:
    reply = xclient("generate", "vllm_legacy", "你好", "--max-tokens", 6, "--json", "--url", grpc_url).json()
    assert reply["model"] == "vllm_legacy" and reply["text"] == "你好！我是vllm_legacy"
    piped = xclient("generate", "vllm_legacy", "-", "--max-tokens", 6, "--json", "--url", grpc_url, stdin="你好\n")
    assert piped.json() == reply
    chat = xclient("chat", "vllm_legacy", "--max-tokens", 6, "--url", grpc_url, stdin="你好\n")
    assert chat.out == "你好！我是vllm_legacy\n"
    clash = xclient("generate", "vllm_legacy", "你好", "--model", "text_llm", "--url", grpc_url)
    assert clash.code == 2 and "two models given" in clash.err
    assert xclient("generate", "a", "b", "c", "--url", grpc_url).code == 2


def test_generate_with_an_empty_stdin_says_there_is_no_prompt(xclient: Xclient, grpc_url: str) -> None:
    for stdin in ("", "  \n\n"):
        result = xclient("generate", "--url", grpc_url, stdin=stdin)
        assert result.code == 2 and result.err.startswith("error: no prompt: stdin was empty")


def test_generate_model_from_xclient_model(xclient: Xclient, grpc_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCLIENT_MODEL", "vllm_legacy")
    monkeypatch.setenv("XCLIENT_URL", grpc_url)
    reply = xclient("generate", "hi", "--max-tokens", 4, "--json").json()
    assert reply["model"] == "vllm_legacy" and reply["text"]


def test_chat_reads_turns_from_stdin_until_exit(xclient: Xclient, url: str) -> None:
    turns = "你好\n\n再说一遍\n/exit\n这一行不会被读到\n"
    result = xclient("chat", "--system", "你是一个简洁的助手", "--max-tokens", 200, "--url", url, stdin=turns)
    answers = result.out.splitlines()
    assert result.code == 0 and len(answers) == 2
    assert "“你好”" in answers[0] and "第1轮" in answers[0]
    assert "“再说一遍”" in answers[1] and "第2轮" in answers[1]  # the history went with the second turn
    assert "这一行不会被读到" not in result.out


# -- demo --------------------------------------------------------------------------------------------------


def test_demo_against_the_session_server(xclient: Xclient, http_url: str, grpc_url: str) -> None:
    result = xclient("demo", "--url", grpc_url)
    assert result.code == 0, result.out + result.err
    assert "all 9 steps passed" in result.out and "✗" not in result.out
    for step in ("ModelClient", "FuturesModelClient", "AsyncioModelClient", "DecoupledModelClient", "MetaLMRerank"):
        assert f"✓ {step} " in result.out
    both = xclient("demo", "--url", http_url, "--grpc-url", grpc_url)
    assert both.code == 0 and "HTTP  infer_sample" in both.out and "gRPC  the same calls" in both.out


def test_demo_fails_when_a_step_fails(xclient: Xclient) -> None:
    result = xclient("demo", "--url", f"grpc://127.0.0.1:{_free_port()}", "--timeout", "1")
    assert result.code == 1 and "✗ ServerClient" in result.out and "9 of 9 steps failed" in result.out


def test_full_demo_starts_and_stops_its_own_server() -> None:
    """The README's first command, as CI runs it."""
    result = run_module("demo", timeout=120)
    assert result.code == 0, result.out + result.err
    assert "all 9 steps passed" in result.out and result.out.rstrip().endswith("the server is stopped")


# -- subprocesses: locale, Ctrl-C, serve --------------------------------------------------------------------


def test_utf8_in_and_out_whatever_the_locale(http_url: str) -> None:
    env = subprocess_env(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONIOENCODING="")
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.stdout.encoding)"], capture_output=True, env=env, text=True
    )
    assert probe.stdout.strip().lower() not in ("utf-8", "utf8")  # the locale alone would not do UTF-8
    result = run_module("chat", "--url", http_url, "--max-tokens", "80", input="你好\n/exit\n", env=env)
    assert result.code == 0 and "“你好”" in result.out


def test_ctrl_c_stops_a_stream_cancels_it_and_exits_130(triton_server: LocalTritonServer, grpc_url: str) -> None:
    before = triton_server.logs().count("request cancelled")
    process = popen_module("generate", "tell me a story", "--model", "vllm_slow", "--url", grpc_url)
    assert process.stdout is not None
    assert process.stdout.read(5) == b"Hello"  # streaming: the first token is out
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and b"Traceback" not in err
    assert b"stand-in for vllm_slow, a deterministic program running on Triton" not in out  # it did not finish
    deadline = time.monotonic() + 10
    while triton_server.logs().count("request cancelled") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert triton_server.logs().count("request cancelled") > before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_until_sigint_then_stops_its_server(xclient: Xclient) -> None:
    http_port, grpc_port = _free_port(), _free_port()
    argv = ["serve", "--models", "text", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    process = popen_module(*argv, "--api-key", API_KEY, encoding="utf-8")
    assert process.stdout is not None
    try:
        banner: list[str] = []
        while not banner or "Ctrl-C" not in banner[-1]:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "serve exited"
            banner.append(line)
        text = "".join(banner)
        assert f"http://127.0.0.1:{http_port}" in text and f"grpc://127.0.0.1:{grpc_port}" in text
        assert "serves: text\n" in text and "python only" in text
        pid = int(next(line.split()[-1] for line in banner if line.split()[:1] == ["pid"]))
        url = f"http://127.0.0.1:{http_port}"
        assert xclient("models", "list", "--url", url, "--api-key", API_KEY).code == 0
        denied = xclient("models", "list", "--url", f"grpc://127.0.0.1:{grpc_port}")
        assert denied.code == 1 and denied.err.startswith("error:")
        wrong = xclient("health", "--url", url, "--api-key", API_KEY[::-1])
        assert wrong.code == 1 and API_KEY[::-1] not in wrong.err
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert API_KEY not in text + out + err and "stopped" in err
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/v2/health/live", timeout=2)


def test_serve_refuses_models_for_other_backends(xclient: Xclient, tmp_path) -> None:
    (tmp_path / "qwen_vllm" / "1").mkdir(parents=True)
    (tmp_path / "qwen_vllm" / "config.pbtxt").write_text('backend: "vllm"\n', "utf-8")
    result = xclient("serve", "--model-repository", tmp_path, "--http-port", "0", "--grpc-port", "0")
    assert result.code == 2 and "cannot serve: qwen_vllm (backend vllm)" in result.err
