"""The LLM engine's pure parts, without a server: streaming text (UTF-8, stops, echo, cumulative chunks),
usage accounting, retry rules, backend detection and request building per backend, and SSE parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from Xclient.client import ModelConfig
from Xclient.exceptions import (
    IncompatibleModelError,
    InferenceServerError,
    ServerUnavailableError,
    XclientTimeoutError,
    XclientValueError,
)
from Xclient.llms._backends import (
    Sampling,
    TextBackend,
    TrtllmBackend,
    VllmBackend,
    detect_backend,
    detect_backend_name,
)
from Xclient.llms._engine import Retry
from Xclient.llms._http import SseParser, json_inputs
from Xclient.llms._streaming import Generation, Piece, TextDecoder


def feed_all(decoder: TextDecoder, parts: list[bytes]) -> list[str]:
    return [decoder.feed(part) for part in parts] + [decoder.finish()]


def split_bytes(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# -- incremental UTF-8 ---------------------------------------------------------------------------


def test_multibyte_characters_split_across_chunks_are_held_back_until_complete():
    data = "你好😀".encode()  # 3 + 3 + 4 bytes
    out = feed_all(TextDecoder(), [data[i : i + 1] for i in range(len(data))])
    assert out == ["", "", "你", "", "", "好", "", "", "", "😀", ""]
    assert "\ufffd" not in "".join(out)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="你好世界。，😀🎉aZ <|>_end", max_size=30), cuts=st.lists(st.integers(0, 200), max_size=12)
)
def test_any_split_of_utf8_bytes_decodes_to_the_original_text(text, cuts):
    assert "".join(feed_all(TextDecoder(), split_bytes(text.encode(), cuts))) == text


def test_a_stream_that_ends_inside_a_character_shows_one_replacement_character():
    assert feed_all(TextDecoder(), ["好".encode()[:2]]) == ["", "\ufffd"]


# -- stop sequences ----------------------------------------------------------------------------


def reference_stop(text: str, stops: list[str]) -> str:
    hits = [text.find(s) for s in stops if s and s in text]
    return text[: min(hits)] if hits else text


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="你好。<|im_end|>ab😀", max_size=40),
    stops=st.lists(st.sampled_from(["。", "<|im_end|>", "好。", "ab", "😀a", "|i"]), max_size=3),
    cuts=st.lists(st.integers(0, 300), max_size=15),
)
def test_stops_cut_the_text_before_the_first_stop_however_the_bytes_are_split(text, stops, cuts):
    decoder = TextDecoder(stop=stops)
    delivered = "".join(feed_all(decoder, split_bytes(text.encode(), cuts)))
    assert delivered == reference_stop(text, stops)
    assert decoder.stopped == (delivered != text or any(s in text for s in stops))


def test_a_stop_split_across_chunks_is_held_back_then_dropped():
    decoder = TextDecoder(stop=["<|im_end|>"])
    assert decoder.feed(b"\xe4\xbd\xa0\xe5\xa5\xbd<|im") == "你好"  # "<|im" may begin the stop: held back
    assert not decoder.stopped
    assert decoder.feed(b"_end|>\n<|im_start|>") == ""
    assert decoder.stopped
    assert decoder.feed(b"more") == "" and decoder.finish() == ""


def test_held_back_text_that_is_not_a_stop_after_all_is_delivered():
    decoder = TextDecoder(stop=["。！"])
    assert decoder.feed("好。".encode()) == "好"
    assert decoder.feed("吗".encode()) == "。吗"
    assert decoder.feed("。".encode()) == "" and decoder.finish() == "。"  # the end releases what was held


# -- echo and cumulative chunks ---------------------------------------------------------------


def test_echoed_prompt_is_stripped_even_when_it_spans_responses():
    prompt = "<|im_start|>user\n你好<|im_end|>\n".encode()
    decoder = TextDecoder(echo=prompt)
    assert decoder.feed(prompt[:7]) == "" and decoder.feed(prompt[7:] + "答".encode()) == "答"
    assert decoder.feed(prompt) == prompt.decode()  # only the start is an echo
    assert TextDecoder(echo=b"prompt").feed("不是回声".encode()) == "不是回声"  # a server that does not echo


def test_cumulative_chunks_with_the_prompt_become_deltas():
    prompt = "问：".encode()
    decoder = TextDecoder(cumulative=True, echo=prompt)
    chunks = [
        prompt + "你".encode(),
        prompt + "你好".encode()[:4],
        prompt + "你好。".encode(),
        prompt + "你好。".encode(),
    ]
    assert feed_all(decoder, chunks) == ["你", "", "好。", "", ""]
    # expected cumulative with the prompt, but the first response has no prompt: deltas after all
    misdetected = TextDecoder(cumulative=True, echo=prompt)
    assert feed_all(misdetected, ["哈".encode(), "哈".encode(), "。".encode()]) == ["哈", "哈", "。", ""]
    # cumulative without the prompt (TensorRT-LLM BLS with accumulate_tokens), with a stop
    bls = TextDecoder(cumulative=True, stop=["。"])
    assert feed_all(bls, ["你".encode(), "你好".encode(), "你好。再".encode()]) == ["你", "好", "", ""]


def test_text_a_cumulative_response_takes_back_leaves_the_stop_hold_back():
    prompt = "问：".encode()
    # vLLM <= 0.3 with stop=["天气"]: "今天天" is streamed, then the stop's start is taken back
    decoder = TextDecoder(cumulative=True, echo=prompt, stop=["天气"])
    parts = [prompt + text.encode() for text in ("今", "今天", "今天天", "今天")]
    assert "".join(feed_all(decoder, parts)) == "今天"
    english = TextDecoder(cumulative=True, stop=[" fox jumps"])
    parts = [text.encode() for text in ("The quick", "The quick brown", "The quick brown fox", "The quick brown")]
    assert "".join(feed_all(english, parts)) == "The quick brown"
    # a take-back inside a multi-byte character, and one of text already delivered (it stays delivered)
    split = TextDecoder(cumulative=True, stop=["好吗"])
    assert "".join(feed_all(split, [b"\xe4\xbd", "你好".encode(), "你".encode(), "你们".encode()])) == "你们"
    delivered = TextDecoder(cumulative=True)
    assert feed_all(delivered, ["你好".encode(), "你".encode(), "你们".encode()]) == ["你好", "", "们", ""]


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="今天气好ab 。", min_size=1, max_size=20),
    stops=st.lists(st.sampled_from(["天气", "b a", "。", "好。"]), min_size=1, max_size=2),
)
def test_a_vllm_0_3_stream_that_takes_stop_starts_back_ends_as_the_engine_does(text, stops):
    from Xclient.server._demo_llm import vllm_steps

    steps = vllm_steps(text, 100, stops, take_back=True)
    decoder = TextDecoder(cumulative=True, echo=b"p", stop=stops)
    delivered = "".join(feed_all(decoder, [b"p" + chunk.encode() for chunk, _ in steps]))
    assert delivered == steps[-1][0]


# -- usage and metadata --------------------------------------------------------------------------


def test_generation_counts_tokens_once_and_reports_the_last_finish_reason():
    pieces = [
        Piece("你".encode(), num_input_tokens=7, num_output_tokens=1, finish_reason="None"),
        Piece("好".encode(), num_input_tokens=7, num_output_tokens=1, finish_reason="None"),
        Piece("。".encode(), num_input_tokens=7, num_output_tokens=1, finish_reason="length"),
    ]
    generation = Generation(TextDecoder(), lambda piece: piece, "Qwen2-0.5B-Instruct")
    assert [generation.feed(piece) for piece in pieces] == ["你", "好", "。"]
    ending = generation.finish()
    assert ending.usage == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert ending.metadata == {
        "model_name": "Qwen2-0.5B-Instruct",
        "finish_reason": "length",
        "usage_source": "backend",
    }

    stopped = Generation(TextDecoder(stop=["好"]), lambda piece: piece, "m")
    assert stopped.feed(Piece("你好".encode())) == "你" and stopped.stopped
    ending = stopped.finish()
    assert ending.usage is None and ending.metadata["finish_reason"] == "stop"  # no counts reported: no usage


# -- retries ---------------------------------------------------------------------------------------


def test_retries_only_connection_failures_before_any_response_with_backoff():
    down = ServerUnavailableError("connection refused", retryable=True)
    retry = Retry(3)
    pauses = [retry.delay(down, None) for _ in range(3)]  # the one policy: 0.5 s doubling, less up to 25 %
    assert 0.375 <= pauses[0] <= 0.5 and 0.75 <= pauses[1] <= 1.0 and 1.5 <= pauses[2] <= 2.0
    with pytest.raises(ServerUnavailableError):
        retry.delay(down, None)  # out of retries
    with pytest.raises(ServerUnavailableError):
        Retry(0).delay(down, None)  # opt-in
    lost = ServerUnavailableError("connection reset under the request")  # it may have reached the server
    for error in (InferenceServerError("bad"), XclientTimeoutError("slow"), lost):
        with pytest.raises(type(error)):
            Retry(3).delay(error, None)
    received = Generation(TextDecoder(), lambda piece: piece, "m")
    received.feed(Piece(b"x"))
    with pytest.raises(ServerUnavailableError):
        Retry(3).delay(down, received)  # never once data came


# -- backends --------------------------------------------------------------------------------------


def tensor(name, dtype, dims, optional=False):
    return {"name": name, "data_type": f"TYPE_{dtype}", "dims": dims, "optional": optional}


def llm_config(name, inputs, *, max_batch_size=0, decoupled=True, **extra):
    """A model config as Triton returns it, with one text output ``text_output``."""
    output = [tensor("text_output", "STRING", [-1])]
    policy = {"decoupled": decoupled}
    return ModelConfig.from_dict(
        {"name": name, "max_batch_size": max_batch_size, "model_transaction_policy": policy, "input": inputs}
        | {"output": output, **extra}
    )


def vllm_config(*, legacy=False):
    inputs = [tensor("text_input", "STRING", [1]), tensor("stream", "BOOL", [1], True)]
    inputs.append(tensor("sampling_parameters", "STRING", [1], True))
    if not legacy:
        names = ("exclude_input_in_output", "return_num_input_tokens", "return_num_output_tokens")
        inputs += [tensor(name, "BOOL", [1], True) for name in (*names, "return_finish_reason")]
    return llm_config("qwen", inputs, backend="vllm")


def trtllm_config(*, legacy=False, decoupled=True, accumulate=False):
    int_type = "UINT32" if legacy else "INT32"
    inputs = [
        tensor("text_input", "STRING", [-1] if legacy else [1]),
        tensor("max_tokens", int_type, [-1] if legacy else [1]),
        tensor("stop_words", "STRING", [-1], True),
        tensor("bad_words", "STRING", [-1], True),
        tensor("min_length" if legacy else "min_tokens", int_type, [1], True),
        tensor("random_seed" if legacy else "seed", "UINT64", [1], True),
        tensor("temperature", "FP32", [1], True),
        tensor("top_k", int_type, [1], True),
        tensor("stream", "BOOL", [1], True),
    ]
    if not legacy:
        inputs.append(tensor("exclude_input_in_output", "BOOL", [1], True))
    parameters = {"accumulate_tokens": {"string_value": "true"}} if accumulate else {}
    return llm_config(
        "ensemble", inputs, max_batch_size=8, decoupled=decoupled, platform="ensemble", parameters=parameters
    )


def text_config():
    return ModelConfig.from_dict(
        {
            "name": "echo",
            "max_batch_size": 4,
            "input": [tensor("prompt", "STRING", [1])],
            "output": [tensor("LENGTH", "INT32", [1]), tensor("completion", "STRING", [1])],
        }
    )


def sampling_sent(request):
    return json.loads(request.inputs["sampling_parameters"][0])


def test_backend_detection_from_the_config():
    assert detect_backend_name(vllm_config()) == "vllm"
    assert detect_backend_name(vllm_config(legacy=True)) == "vllm"
    assert detect_backend_name(trtllm_config()) == "tensorrt_llm"
    assert detect_backend_name(trtllm_config(legacy=True)) == "tensorrt_llm"
    assert detect_backend_name(text_config()) == "text"
    images = ModelConfig.from_dict({"name": "resnet", "input": [tensor("x", "FP32", [3, 224, 224])], "output": []})
    with pytest.raises(IncompatibleModelError, match="'resnet'.*neither a vLLM model.*'x' FP32"):
        detect_backend_name(images)
    assert isinstance(detect_backend(trtllm_config(), "text"), TextBackend)  # overridable
    with pytest.raises(IncompatibleModelError, match="no input 'text_input'"):
        detect_backend(text_config(), "vllm")  # an override must still fit
    with pytest.raises(IncompatibleModelError, match="no output 'missing'.*output_name"):
        detect_backend(vllm_config(), output_name="missing")


def test_vllm_sends_max_tokens_and_only_the_keys_the_user_set():
    backend = VllmBackend(vllm_config())
    request = backend.request("你好", Sampling(max_tokens=512), stream=True)
    assert sampling_sent(request) == {"max_tokens": 512}
    settings = {"temperature": 0.0, "top_k": 20, "seed": 7, "min_tokens": 2}
    sampling = Sampling(max_tokens=64, settings=settings, stop=("。", "<|im_end|>"), extra={"min_p": 0.05})
    sent = sampling_sent(backend.request("你好", sampling, stream=True))
    assert sent == {"max_tokens": 64, **settings, "stop": ["。", "<|im_end|>"], "min_p": 0.05}
    assert isinstance(sent["top_k"], int) and isinstance(sent["temperature"], float)  # native JSON types
    for gone in ("use_beam_search", "length_penalty", "best_of"):
        assert gone not in sent


def test_vllm_streaming_and_non_streaming_requests():
    backend = VllmBackend(vllm_config())
    streaming = backend.request("提示", Sampling(max_tokens=8), stream=True)
    assert streaming.inputs["stream"].tolist() == [True] and "exclude_input_in_output" not in streaming.inputs
    assert streaming.echo is None and not streaming.cumulative
    plain = backend.request("提示", Sampling(max_tokens=8), stream=False)
    assert plain.inputs["stream"].tolist() == [False] and plain.inputs["exclude_input_in_output"].tolist() == [True]
    assert plain.inputs["text_input"].tolist() == ["提示".encode()]
    for name in ("return_num_input_tokens", "return_num_output_tokens", "return_finish_reason"):
        assert plain.inputs[name].dtype == np.bool_ and plain.inputs[name].tolist() == [True]
    # r23.10-r24.02: no exclude_input_in_output, no return_*: the prompt is echoed, streams are cumulative
    legacy = VllmBackend(vllm_config(legacy=True))
    request = legacy.request("提示", Sampling(max_tokens=8), stream=True)
    assert set(request.inputs) == {"text_input", "stream", "sampling_parameters"}
    assert request.cumulative and request.echo == "提示".encode()
    assert legacy.request("提示", Sampling(max_tokens=8), stream=False).echo == "提示".encode()


def test_vllm_reads_counts_and_finish_reason_from_numpy_or_json():
    backend = VllmBackend(vllm_config())
    grpc = {
        "text_output": np.array(["好".encode()], dtype=object),
        "num_input_tokens": np.array([12], dtype=np.uint32),
        "num_output_tokens": np.array([1], dtype=np.uint32),
        "finish_reason": np.array([b"length"], dtype=object),
    }
    http = {"text_output": "好", "num_input_tokens": 12, "num_output_tokens": [1], "finish_reason": ["length"]}
    expected = Piece("好".encode(), 12, 1, "length")
    assert backend.read(grpc) == expected == backend.read(http)
    assert type(backend.read(grpc).num_input_tokens) is int


def test_tensorrt_llm_casts_to_declared_dtypes_under_current_and_former_names():
    sampling = Sampling(max_tokens=32, settings={"min_tokens": 2, "seed": 42, "temperature": 0.5}, stop=("。",))
    current = TrtllmBackend(trtllm_config()).request("你好", sampling, stream=True)
    assert current.inputs["max_tokens"].dtype == np.int32 and current.inputs["min_tokens"].dtype == np.int32
    assert current.inputs["seed"].dtype == np.uint64 and current.inputs["temperature"].dtype == np.float32
    assert current.inputs["stop_words"].tolist() == ["。".encode()] and current.inputs["stream"].tolist() == [True]
    assert current.echo is None and "exclude_input_in_output" not in current.inputs

    legacy = TrtllmBackend(trtllm_config(legacy=True, decoupled=False)).request("你好", sampling, stream=True)
    assert legacy.inputs["max_tokens"].dtype == np.uint32
    assert legacy.inputs["min_length"].tolist() == [2] and legacy.inputs["min_length"].dtype == np.uint32
    assert legacy.inputs["random_seed"].dtype == np.uint64
    assert legacy.inputs["stream"].tolist() == [False]  # a coupled model cannot stream; its config declares it
    assert legacy.echo == "你好".encode()  # no exclude_input_in_output: the prompt comes back first

    plain = TrtllmBackend(trtllm_config()).request("你好", Sampling(max_tokens=4), stream=False)
    assert plain.inputs["exclude_input_in_output"].tolist() == [True] and plain.echo is None
    bls = TrtllmBackend(trtllm_config(accumulate=True)).request("你好", Sampling(max_tokens=4), stream=True)
    assert bls.cumulative


def test_tensorrt_llm_refuses_lossy_casts_and_settings_it_has_no_input_for():
    backend = TrtllmBackend(trtllm_config(legacy=True))
    with pytest.raises(XclientValueError, match=r"'ensemble', input 'random_seed' UINT64 \[1\].*\[-1, -1\]"):
        backend.request("x", Sampling(max_tokens=4, settings={"seed": -1}), stream=False)
    with pytest.raises(XclientValueError, match="no input for 'frequency_penalty'.*'frequency_penalty'"):
        backend.request("x", Sampling(max_tokens=4, settings={"frequency_penalty": 0.5}), stream=False)
    with pytest.raises(XclientValueError, match="model_kwargs: model 'ensemble' has no input 'beam'"):
        backend.request("x", Sampling(max_tokens=4, extra={"beam": 2}), stream=False)
    sent = backend.request("x", Sampling(max_tokens=4, extra={"bad_words": ["坏", "差"]}), stream=False)
    assert sent.inputs["bad_words"].tolist() == ["坏".encode(), "差".encode()]


def test_text_model_gets_the_prompt_only():
    backend = TextBackend(text_config())
    request = backend.request("你好", Sampling(max_tokens=9, settings={"temperature": 0.1}, stop=("。",)), stream=True)
    assert list(request.inputs) == ["prompt"] and backend.text_output.name == "completion"
    assert request.args(backend.config) == (request.inputs["prompt"],)
    two = ModelConfig.from_dict(
        {
            "name": "two",
            "input": [tensor("system", "STRING", [1]), tensor("query", "STRING", [1])],
            "output": [tensor("answer", "STRING", [1])],
        }
    )
    with pytest.raises(IncompatibleModelError, match="cannot tell which input is the prompt input.*input_name="):
        detect_backend(two)
    request = detect_backend(two, input_name="query").request(
        "你好", Sampling(max_tokens=1, extra={"system": "规则"}), stream=False
    )
    assert request.inputs["query"].tolist() == ["你好".encode()] and request.inputs["system"].tolist() == [
        "规则".encode()
    ]


# -- the HTTP generate extension's formats ---------------------------------------------------------


def test_sse_events_are_parsed_from_bytes_in_any_chunking():
    stream = b'data: {"text_output": "\xe4\xbd"}\n\ndata: {"text_output": "\xa0"}\r\n\r\n: comment\n\n'
    for size in (1, 3, len(stream)):
        parser = SseParser()
        events = [event for i in range(0, len(stream), size) for event in parser.feed(stream[i : i + size])]
        assert events == [b'{"text_output": "\xe4\xbd"}', b'{"text_output": "\xa0"}']


def test_json_inputs_use_scalars_for_one_element_inputs_and_lists_otherwise():
    config = trtllm_config()
    request = TrtllmBackend(config).request("你好", Sampling(max_tokens=8, stop=("。", "！")), stream=True)
    assert json_inputs(config, request.inputs) == {
        "text_input": "你好",
        "max_tokens": 8,
        "stop_words": ["。", "！"],
        "stream": True,
    }
