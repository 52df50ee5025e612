"""Usage (prompt and completion tokens) on every path: the backend's own counts (vLLM, TensorRT-LLM's
``num_input_tokens`` / ``num_output_tokens``), else a configured tokenizer, else None with
``usage_source`` None: nothing is guessed. Against the session's real server, both protocols."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from pydantic import ValidationError

from Xclient.llms import ChatMetaLM, MetaLM
from Xclient.llms._templates import resolve_template
from Xclient.server._demo_llm import answer, tokenize

from .test_cli import Xclient, xclient  # noqa: F401 - the in-process `xclient` runner fixture

QUESTION = "用一句话介绍一下你自己"
#: TensorRT-LLM's ensemble as TensorRT-LLM's triton_backend has it: count outputs (tests/models/ensemble_v1_0).
COUNTING_ENSEMBLE = "ensemble_v1_0"
#: The demo ensemble (v0.20 stand-in): no count outputs.
SILENT_ENSEMBLE = "ensemble"


def _prompt(model: str, question: str = QUESTION) -> str:
    return resolve_template(None, model).render([("user", question)])


def _minilm_tokenizer_json() -> pathlib.Path:
    from Xclient.server._minilm import model_dir

    return pathlib.Path(model_dir()) / "tokenizer.json"


def _hf_tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_minilm_tokenizer_json()))


@pytest.mark.parametrize("streaming", [False, True])
def test_tensorrt_llm_counts_are_the_usage(url: str, streaming: bool) -> None:
    """Streamed, each response counts its own token (summed); not streamed, one response counts all."""
    llm = ChatMetaLM(server_url=url, model=COUNTING_ENSEMBLE, max_tokens=256, streaming=streaming)
    message = llm.invoke(QUESTION)
    prompt = _prompt(COUNTING_ENSEMBLE)
    assert message.content == answer(prompt, COUNTING_ENSEMBLE)
    inputs, outputs = len(tokenize(prompt)), len(tokenize(message.content))
    assert message.usage_metadata == {
        "input_tokens": inputs,
        "output_tokens": outputs,
        "total_tokens": inputs + outputs,
    }
    assert message.response_metadata["usage_source"] == "backend"


def test_no_counts_and_no_tokenizer_mean_no_usage_and_say_so(url: str) -> None:
    message = ChatMetaLM(server_url=url, model=SILENT_ENSEMBLE, max_tokens=16).invoke(QUESTION)
    assert message.content and message.usage_metadata is None
    assert message.response_metadata["usage_source"] is None


@pytest.mark.parametrize("kind", ["callable", "tokenizers", "path"])
def test_a_tokenizer_counts_when_the_backend_does_not(url: str, kind: str) -> None:
    hf = _hf_tokenizer()
    tokenizer: Any = {
        "callable": lambda text: list(text),  # one token per character
        "tokenizers": hf,
        "path": str(_minilm_tokenizer_json()),
    }[kind]
    message = ChatMetaLM(server_url=url, model=SILENT_ENSEMBLE, max_tokens=16, tokenizer=tokenizer).invoke(QUESTION)
    prompt = _prompt(SILENT_ENSEMBLE)

    def count(text: str) -> int:
        return len(text) if kind == "callable" else len(hf.encode(text, add_special_tokens=False).ids)

    assert message.usage_metadata == {
        "input_tokens": count(prompt),
        "output_tokens": count(message.content),
        "total_tokens": count(prompt) + count(message.content),
    }
    assert message.response_metadata["usage_source"] == "tokenizer"


def test_the_backends_counts_win_over_the_tokenizer(url: str) -> None:
    llm = ChatMetaLM(server_url=url, model="Qwen2-0.5B-Instruct", max_tokens=16, tokenizer=lambda text: [0])
    message = llm.invoke(QUESTION)
    assert message.response_metadata["usage_source"] == "backend"
    assert message.usage_metadata["output_tokens"] == len(tokenize(message.content)) > 1


def test_metallm_reports_usage_in_generation_info_and_llm_output(url: str) -> None:
    llm = MetaLM(server_url=url, model=COUNTING_ENSEMBLE, max_tokens=8)
    result = llm.generate(["你好", "Triton 是什么"])
    infos = [g[0].generation_info for g in result.generations]
    assert all(info["usage_source"] == "backend" and info["usage"]["output_tokens"] >= 1 for info in infos)
    total = sum(info["usage"]["total_tokens"] for info in infos)
    assert result.llm_output["token_usage"]["total_tokens"] == total
    silent = MetaLM(server_url=url, model=SILENT_ENSEMBLE, max_tokens=8).generate(["你好"])
    info = silent.generations[0][0].generation_info
    assert "usage" not in info and info["usage_source"] is None and "token_usage" not in (silent.llm_output or {})


def test_a_tokenizer_that_is_not_one_is_refused_at_construction() -> None:
    with pytest.raises(ValidationError, match="tokenizer: expected a path to tokenizer.json"):
        ChatMetaLM(server_url="http://localhost:8000", model="m", tokenizer=42)


def test_generate_usage_on_stderr_and_in_json(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    url = triton_server.grpc_url
    shown = xclient("generate", COUNTING_ENSEMBLE, "你好", "--url", url, "--max-tokens", "8", "--usage")
    assert shown.code == 0
    prompt_tokens = len(tokenize(_prompt(COUNTING_ENSEMBLE, "你好")))
    assert f"usage: prompt {prompt_tokens} tokens, completion " in shown.err and "(the backend's counts)" in shown.err
    silent = xclient("generate", SILENT_ENSEMBLE, "你好", "--url", url, "--max-tokens", "8", "--usage")
    assert "usage: not reported (the backend returns no token counts; --tokenizer counts them)" in silent.err
    counted = xclient(
        "generate", SILENT_ENSEMBLE, "你好", "--url", url, "--max-tokens", "8", "--json",
        "--tokenizer", _minilm_tokenizer_json().parent,
    ).json()  # fmt: skip
    assert counted["usage_source"] == "tokenizer" and counted["usage"]["input_tokens"] > 0
    missing = xclient("generate", "你好", "--url", url, "--tokenizer", "/nonexistent/tokenizer.json")
    assert missing.code == 2 and "tokenizer: no tokenizer.json at" in missing.err


def test_bench_takes_tokens_from_trtllm_counts_or_the_tokenizer(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    url = triton_server.grpc_url
    argv = ["--url", url, "--requests", "2", "--warmup", "0", "--max-tokens", "6", "--json"]
    counted = xclient("bench", COUNTING_ENSEMBLE, *argv).json()["levels"][0]
    assert counted["tokens_source"] == "backend" and counted["input_tokens"] > 0
    assert all(s["responses"] == s["output_tokens"] for s in counted["samples"])  # one token per response
    tokenized = xclient("bench", SILENT_ENSEMBLE, *argv, "--tokenizer", _minilm_tokenizer_json()).json()["levels"][0]
    assert tokenized["tokens_source"] == "tokenizer" and tokenized["input_tokens"] > 0
