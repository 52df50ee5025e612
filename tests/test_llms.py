"""MetaLM (text completion on the same engine) against the real local server, the lazy public imports,
and the LLM stand-ins' own contracts, checked with the base clients (what the demo promises to mimic)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from langchain_core.outputs import LLMResult

from Xclient import DecoupledModelClient
from Xclient import exceptions as errors
from Xclient.llms import MetaLM
from Xclient.llms import llms as llms_module
from Xclient.llms._templates import BUILTIN_TEMPLATES
from Xclient.server._demo_llm import VLLM_DEFAULT_MAX_TOKENS, answer, tokenize

QWEN = "Qwen2-0.5B-Instruct"
CHATML = BUILTIN_TEMPLATES["qwen"].render([("user", "介绍一下你自己")])


# -- MetaLM ------------------------------------------------------------------------------------------


def test_metalm_sends_the_prompt_as_it_is(url):
    llm = MetaLM(server_url=url, model=QWEN)
    assert llm.invoke(CHATML) == answer(CHATML, QWEN)
    assert llm.invoke("你好") == answer("你好", QWEN)  # no chat template: a raw prompt is one user turn
    chunks = list(llm.stream(CHATML, stop=["，"]))
    assert "".join(chunks) == "你好！我是Qwen2-0.5B-Instruct的演示替身"


def test_metalm_generate_reports_usage_and_finish_reason(url):
    llm = MetaLM(server_url=url, model=QWEN, max_tokens=3)
    result = llm.generate([CHATML, "Hello there"])
    assert isinstance(result, LLMResult) and [g[0].text for g in result.generations] == ["你好！", "Hello! I"]
    info = result.generations[0][0].generation_info
    assert info["finish_reason"] == "length" and info["model_name"] == QWEN
    assert info["usage"] == {
        "input_tokens": len(tokenize(CHATML)),
        "output_tokens": 3,
        "total_tokens": len(tokenize(CHATML)) + 3,
    }
    assert result.llm_output["token_usage"]["output_tokens"] == 6


async def test_metalm_async_is_native_and_batches(url, monkeypatch):
    llm = MetaLM(server_url=url, model=QWEN, stop=["。"])
    sync = llm.batch([CHATML, "Hi"])
    monkeypatch.setattr(llms_module, "run", lambda *a, **k: pytest.fail("the sync engine ran in an async call"))
    assert await llm.abatch([CHATML, "Hi"]) == sync
    assert await llm.ainvoke(CHATML) == sync[0]
    assert "".join([chunk async for chunk in llm.astream(CHATML)]) == sync[0]
    await llm.aclose()


def test_metalm_on_tensorrt_llm_and_text_models(url):
    assert MetaLM(server_url=url, model="ensemble", max_new_tokens=2).invoke("你好") == "你好"
    assert MetaLM(server_url=url, model="trtllm_legacy").invoke("Hi") == answer("Hi", "trtllm_legacy")
    assert MetaLM(server_url=url, model="text_llm").invoke("你好") == answer("你好", "text_llm")


def test_metalm_errors_are_typed(url, dead_url):
    with pytest.raises(errors.ModelUnavailableError):
        MetaLM(server_url=url, model="no_such_llm").invoke("x")
    with pytest.raises(errors.ServerUnavailableError):
        MetaLM(server_url=dead_url, model=QWEN).invoke("x")
    with pytest.raises(errors.IncompatibleModelError, match="'stream'.*neither a vLLM model.*'n' INT32"):
        MetaLM(server_url=url, model="stream").invoke("x")
    assert MetaLM(server_url=url, model="identity").invoke("回声") == "回声"  # one BYTES in, one out: a text model


# -- the public imports ---------------------------------------------------------------------------------


def test_llm_classes_are_public_and_imported_lazily():
    code = (
        "import sys, Xclient, Xclient.llms; "
        "before = 'langchain_core' in sys.modules; "
        "from Xclient.llms import ChatMetaLM, MetaLM; "
        "print(before, 'langchain_core' in sys.modules, Xclient.ChatMetaLM is ChatMetaLM, Xclient.MetaLM is MetaLM)"
    )
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["False", "True", "True", "True"]
    import Xclient.llms

    assert sorted(Xclient.llms.__all__) == ["ChatMetaLM", "MetaLM"]
    with pytest.raises(AttributeError):
        _ = Xclient.llms.NoSuchClass


# -- the stand-ins keep the backends' contracts ------------------------------------------------------


def stream(client: DecoupledModelClient, **inputs: Any) -> list[dict[str, np.ndarray]]:
    return list(client.infer_sample(**inputs))


def texts(responses: list[dict[str, np.ndarray]]) -> list[str]:
    return [r["text_output"][0].decode() for r in responses]


def test_vllm_stand_in_keeps_the_vllm_contract(triton_server):
    with DecoupledModelClient(triton_server.grpc_url, QWEN) as client:
        config = client.model_config
        assert (config.backend, config.max_batch_size, config.decoupled) == ("python", 0, True)
        # no max_tokens: vLLM's default of 16; a delta per token, the final flag on the last text response
        responses = stream(client, text_input=CHATML, stream=True, return_finish_reason=True)
        assert len(responses) == VLLM_DEFAULT_MAX_TOKENS
        assert "".join(texts(responses)) == "".join(tokenize(answer(CHATML, QWEN))[:16])
        assert [r["finish_reason"][0] for r in responses[-2:]] == [b"None", b"length"]
        # not streaming: one response, the prompt echoed unless excluded
        params = json.dumps({"max_tokens": 2})
        assert texts(stream(client, text_input=CHATML, sampling_parameters=params)) == [CHATML + "你好"]
        plain = stream(client, text_input="hi", sampling_parameters=params, exclude_input_in_output=True)
        assert texts(plain) == ["Hello!"]
        # server-side stop: the stop string is removed; token counts per response
        stop = json.dumps({"max_tokens": 50, "stop": ["，"]})
        counted = stream(
            client,
            text_input="你好",
            sampling_parameters=stop,
            stream=True,
            return_num_input_tokens=True,
            return_num_output_tokens=True,
        )
        assert "".join(texts(counted)) == "你好！我是Qwen2-0.5B-Instruct的演示替身"
        assert {int(r["num_input_tokens"][0]) for r in counted} == {2}  # on every response, as vLLM sends it
        # this response's tokens only; the token that completes the stop string comes with empty text
        assert [int(r["num_output_tokens"][0]) for r in counted] == [1] * 12 and texts(counted)[-1] == ""
        for bad, message in (
            ({"use_beam_search": True}, "Unexpected keyword argument 'use_beam_search'"),
            ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ):
            with pytest.raises(errors.InferenceServerError, match=message):
                stream(client, text_input="x", sampling_parameters=json.dumps(bad))
        with pytest.raises(errors.InferenceServerError, match="exclude_input_in_output. = False is not allowed"):
            stream(client, text_input="x", stream=True, exclude_input_in_output=False)


def test_legacy_vllm_stand_in_sends_cumulative_chunks(triton_server):
    with DecoupledModelClient(triton_server.grpc_url, "vllm_legacy") as client:
        responses = stream(client, text_input="你好", stream=True, sampling_parameters=json.dumps({"max_tokens": 3}))
        assert texts(responses) == ["你好你", "你好你好", "你好你好！"]  # prompt + all text so far


def test_tensorrt_llm_stand_in_takes_a_batch_axis_and_keeps_stop_words(triton_server):
    with DecoupledModelClient(triton_server.grpc_url, "ensemble") as client:
        assert client.model_config.max_batch_size == 8
        responses = stream(
            client, text_input="你好", max_tokens=np.array([5], dtype=np.int32), stop_words=["！"], stream=True
        )
        assert texts(responses) == ["你", "好", "！"]  # TensorRT-LLM keeps the stop word
        echoed = stream(client, text_input="你好", max_tokens=np.array([2], dtype=np.int32))
        assert texts(echoed) == ["你好你好"]  # not streaming, not excluded: the prompt comes first
        with pytest.raises(errors.XclientValueError, match="missing required input 'max_tokens' INT32"):
            stream(client, text_input="你好")
