"""Xclient against TensorRT-LLM's ensemble and BLS as each release's models answer (docs/protocols.md
section 2), over both protocols: ``trtllm_legacy`` (v0.5, coupled, UINT32), ``ensemble_v0_7`` (decoupled,
no exclude_input_in_output input), ``ensemble_v0_13`` (coupled, no exclude_input_in_output input),
``tensorrt_llm_bls`` (v0.13, accumulate_tokens) and the demo ``ensemble`` (v0.20). The engines of the
three middle ones echo the prompt on non-streaming calls, decoded without special tokens."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from Xclient import DecoupledModelClient, ModelClient
from Xclient.cli import main
from Xclient.llms import ChatMetaLM, MetaLM
from Xclient.llms._streaming import TextDecoder, strip_decoded_echo
from Xclient.llms._templates import BUILTIN_TEMPLATES
from Xclient.server._demo_llm import answer, decode_skipping_special_tokens, tokenize

RELEASES = ("trtllm_legacy", "ensemble_v0_7", "ensemble_v0_13", "tensorrt_llm_bls", "ensemble")
QUESTION = "请用一句话介绍你自己"
CHATML = BUILTIN_TEMPLATES["qwen"].render([("user", QUESTION)])


def expected(model: str, tokens: int | None = None) -> str:
    text = answer(CHATML, model)
    return text if tokens is None else "".join(tokenize(text)[:tokens])


def test_the_v0_7_and_later_engines_echo_the_prompt_without_its_special_tokens(triton_server):
    with ModelClient(triton_server.grpc_url, "ensemble_v0_13") as client:
        text = client.infer_sample(text_input=CHATML, max_tokens=np.array([3], dtype=np.int32))["text_output"]
        assert text.reshape(-1)[0].decode() == decode_skipping_special_tokens(CHATML) + expected("ensemble_v0_13", 3)
        assert "<|im_start|>" not in text.reshape(-1)[0].decode()
    with DecoupledModelClient(triton_server.grpc_url, "tensorrt_llm_bls") as client:
        max_tokens = np.array([3], dtype=np.int32)
        with client.infer_sample(text_input=CHATML, max_tokens=max_tokens, stream=True) as responses:
            texts = [r["text_output"].reshape(-1)[0].decode() for r in responses]
        assert texts == ["你", "你好", "你好！"]  # accumulated, never the prompt


@pytest.mark.parametrize("model", RELEASES)
def test_chat_invoke_drops_the_echo_on_every_release(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen")
    assert llm.invoke(QUESTION).content == expected(model)
    assert "".join(chunk.content for chunk in llm.stream(QUESTION)) == expected(model)
    assert llm.invoke(QUESTION, stop=["，"]).content == expected(model).split("，")[0]


@pytest.mark.parametrize("model", RELEASES)
async def test_async_chat_invoke_drops_the_echo_on_every_release(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", max_tokens=7)
    assert (await llm.ainvoke(QUESTION)).content == expected(model, 7)
    await llm.aclose()


def test_completion_of_a_raw_prompt_drops_the_echo(url):
    for model in ("ensemble_v0_7", "ensemble_v0_13", "tensorrt_llm_bls"):
        llm = MetaLM(server_url=url, model=model, max_tokens=5)
        assert llm.invoke("  你好，\n  世界  ") == "".join(tokenize(answer("  你好，\n  世界  ", model))[:5])


@pytest.mark.parametrize(("model", "counted"), [("ensemble_v0_7", True), ("tensorrt_llm_bls", True)])
def test_finish_reason_where_xclient_can_tell(url, model, counted):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen")
    assert llm.invoke(QUESTION, max_tokens=4).response_metadata["finish_reason"] == "length"  # reached by count
    assert llm.invoke(QUESTION, stop=["，"]).response_metadata["finish_reason"] == "stop"  # Xclient's own stop
    whole = llm.invoke(QUESTION)  # the engine ended by itself: TensorRT-LLM < v0.20 does not say why
    assert whole.content == expected(model) and whole.response_metadata["finish_reason"] is None
    assert whole.usage_metadata is None


def test_a_coupled_model_reports_no_finish_reason_it_cannot_count(url):
    llm = ChatMetaLM(server_url=url, model="ensemble_v0_13", chat_template="qwen", max_tokens=4)
    message = llm.invoke(QUESTION)
    assert message.content == expected("ensemble_v0_13", 4) and message.response_metadata["finish_reason"] is None


@pytest.mark.parametrize("model", RELEASES)
def test_xclient_generate_no_stream_drops_the_echo(url, model, capsys, monkeypatch):
    for name in ("XCLIENT_URL", "XCLIENT_API_KEY", "XCLIENT_MODEL", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    argv = ["generate", QUESTION, "--model", model, "--chat-template", "qwen", "--url", url, "--no-stream", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["text"] == expected(model)


def test_a_decoded_echo_is_stripped_with_whitespace_normalised():
    prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
    prompt += "<|im_start|>assistant\n"
    decoded = "system\n You are a helpful assistant.\nuser\n你好\nassistant\n"
    assert strip_decoded_echo((decoded + "答：好").encode(), prompt.encode()) == "答：好".encode()
    assert strip_decoded_echo("答：好".encode(), prompt.encode()) is None  # no echo: left as it is
    decoder = TextDecoder(echo=prompt.encode(), loose_echo=True, stop=["好"])
    assert decoder.feed((decoded + "答：好").encode()) == "答：" and decoder.stopped
    exact = TextDecoder(echo=prompt.encode(), loose_echo=True)
    assert exact.feed((prompt + "答").encode()) == "答"  # v0.5 decodes the special tokens: an exact echo
    strict = TextDecoder(echo=prompt.encode())
    assert strict.feed((decoded + "答").encode()) == decoded + "答"  # vLLM echoes exactly: nothing loose
