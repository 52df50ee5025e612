"""How to speak each LLM serving contract: detection from the model config, request building, reading.

Detection (:func:`detect_backend`, overridable with ``backend=``), first match wins:

1. **vLLM** (docs/protocols.md section 1): ``backend: "vllm"``, or inputs ``text_input`` and
   ``sampling_parameters``.
2. **TensorRT-LLM** (section 2, ``ensemble`` / ``tensorrt_llm_bls``): inputs ``text_input`` and
   ``max_tokens`` (``request_output_len`` in older versions).
3. **FastDeploy** (section 8): a decoupled model with input ``IN`` and output ``OUT`` (BYTES, JSON).
4. **A generic text model**: one BYTES input that takes the prompt and one BYTES output with the
   text; coupled or decoupled.

A :class:`Backend` builds a :class:`TritonRequest` per call: input values already cast to the dtypes
the config declares (``INT32`` vs ``UINT32`` across TensorRT-LLM versions; errors name the model and
the input, before anything is sent), whether the server echoes the prompt, and whether its streamed
responses are cumulative. It sends only what the user set, plus what the backend needs.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .._contract import Role, describe, incompatible, pick
from ..client import ModelConfig, TensorSpec
from ..client._coding import coerce
from ..exceptions import InferenceServerError, XclientError, XclientValueError
from ._streaming import Piece

BackendName = Literal["vllm", "tensorrt_llm", "fastdeploy", "text"]
BACKENDS: tuple[BackendName, ...] = ("vllm", "tensorrt_llm", "fastdeploy", "text")
#: (role, text) turns of a chat, as :func:`Xclient.llms._templates.message_turns` gives them.
Turns = Sequence[tuple[str, str]]
_ADAPTER = "ChatMetaLM/MetaLM"

#: The generation settings every backend understands, by their vLLM ``SamplingParams`` names.
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_tokens",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """One call's generation settings: ``max_tokens``, the settings the user set (``settings``, by
    their vLLM names), the stop list, and ``extra`` (``model_kwargs``: backend-specific keys)."""

    max_tokens: int
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    guide: Guide | None = None


@dataclasses.dataclass(frozen=True)
class Guide:
    """Constrained decoding for one call: ``schema`` (a JSON schema; None: any JSON object), sent where
    the backend supports it: vLLM's ``sampling_parameters[vllm_key]`` (``structured_outputs`` from
    backend r25.12, ``guided_decoding`` r25.01-r25.11; JSON text of ``{"json": schema}`` or
    ``{"json_object": true}``; None: not sent), TensorRT-LLM's ``guided_decoding_guide_type`` /
    ``guided_decoding_guide`` inputs when the model declares them. Elsewhere nothing is sent (the
    caller validates the answer either way)."""

    schema: Mapping[str, Any] | None
    vllm_key: str | None = "structured_outputs"

    def vllm_value(self) -> str:
        value = {"json": dict(self.schema)} if self.schema is not None else {"json_object": True}
        return json.dumps(value, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class TritonRequest:
    """One request to send: input name -> value (per sample, cast to the config's dtype; the client
    adds the batch axis), the prompt's bytes if the server echoes it, and whether streamed responses
    are cumulative."""

    inputs: dict[str, np.ndarray]
    echo: bytes | None = None
    cumulative: bool = False
    read: Callable[[Mapping[str, Any]], Piece] | None = None  # this request's reader (None: the backend's)
    #: The echo may come back as the tokenizer decodes it: without special tokens, spaces changed
    #: (TensorRT-LLM's postprocessing); stripped when it matches so (see ``TextDecoder``).
    loose_echo: bool = False
    #: One token per response: the stream reached ``max_tokens`` when this many responses carried text
    #: (TensorRT-LLM before v0.20 reports no finish reason); None: not counted.
    counted_max_tokens: int | None = None

    def args(self, config: ModelConfig) -> tuple[Any, ...]:
        """The inputs positionally, in config order (None: left out)."""
        return tuple(self.inputs.get(spec.name) for spec in config.inputs)


def _is_text(spec: TensorSpec) -> bool:
    return spec.is_bytes and len(spec.shape) == 1


_PROMPT_INPUT = Role(
    "input",
    "the prompt input",
    _is_text,
    "a BYTES input with dims [1] or [-1]",
    "input_name",
    ("text", "prompt", "input"),
)
_TEXT_OUTPUT = Role(
    "output", "the text output", _is_text, "a BYTES output with dims [1] or [-1]", "output_name", ("text", "output")
)


class Backend:
    """A serving contract: builds requests and reads responses for one model config."""

    name: BackendName
    text_output: TensorSpec

    def __init__(self, config: ModelConfig, input_name: str | None = None, output_name: str | None = None) -> None:
        self.config = config
        self.text_input = pick(config, _ADAPTER, _PROMPT_INPUT, input_name or self._default_input)
        self.text_output = pick(config, _ADAPTER, _TEXT_OUTPUT, output_name or self._default_output)

    _default_input: str | None = "text_input"
    _default_output: str | None = "text_output"

    #: The server renders chats with its own template: a chat goes as its turns, not as a prompt.
    server_template = False

    @property
    def streams(self) -> bool:
        """The model is decoupled: its responses come as a stream."""
        return self.config.decoupled

    def request(self, prompt: str, sampling: Sampling, *, stream: bool, turns: Turns | None = None) -> TritonRequest:
        """The request for ``prompt``; ``stream``: the caller wants tokens as they come; ``turns``: the
        chat the prompt was rendered from (used by a backend with :attr:`server_template`)."""
        raise NotImplementedError

    def read(self, outputs: Mapping[str, Any]) -> Piece:
        """What a response says (outputs as numpy arrays from the clients, or JSON values from HTTP)."""
        return Piece(text=_first_bytes(outputs.get(self.text_output.name)))

    # -- helpers ---------------------------------------------------------------------------------

    def _extra_inputs(self, sampling: Sampling) -> dict[str, np.ndarray]:
        """``model_kwargs`` as more inputs of the model (TensorRT-LLM and text models), each cast."""
        inputs = {}
        for name, value in sampling.extra.items():
            if not self._has(name):
                raise XclientValueError(
                    f"model_kwargs: model {self.config.name!r} has no input {name!r}; its inputs: "
                    f"{describe(self.config.inputs)}",
                    model=self.config.name,
                    input=name,
                )
            inputs[name] = self._cast(name, value)
        return inputs

    def _has(self, name: str) -> bool:
        return self.config.input(name) is not None

    def _cast(self, name: str, value: Any) -> np.ndarray:
        """``value`` as the declared dtype of input ``name``, as a list for one-axis inputs."""
        spec = self.config.input(name)
        assert spec is not None
        if len(spec.shape) == 1 and not isinstance(value, (list, tuple)):
            value = [value]
        return coerce(self.config, spec, value)


def _first(value: Any) -> Any:
    """The first element of an output (a numpy array, a JSON list or a JSON scalar), or None."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0] if value.size else None
    while isinstance(value, list):
        if not value:
            return None
        value = value[0]
    return value


def _first_bytes(value: Any) -> bytes | None:
    """Text output bytes; JSON strings from HTTP carry non-UTF-8 bytes as surrogate escapes."""
    first = _first(value)
    if first is None:
        return None
    if isinstance(first, bytes):
        return first
    return str(first).encode("utf-8", "surrogateescape")


def _first_int(value: Any) -> int | None:
    first = _first(value)
    return None if first is None else int(first)


#: What vLLM backend r25.01+ answers for any bad ``sampling_parameters``.
LORA_NAME_ERROR = "'NoneType' object has no attribute 'lora_name'"


class VllmBackend(Backend):
    """Triton's vLLM backend (docs/protocols.md section 1): ``sampling_parameters`` as JSON with only the keys
    set (plus ``max_tokens``, whose backend default is 16 tokens), the optional ``return_*`` outputs when
    the config declares them, ``exclude_input_in_output`` on non-streaming calls where declared."""

    name: BackendName = "vllm"
    COUNTS = ("return_num_input_tokens", "return_num_output_tokens", "return_finish_reason")

    def __init__(self, config: ModelConfig, input_name: str | None = None, output_name: str | None = None) -> None:
        super().__init__(config, input_name, output_name)
        # r23.10-r24.02 (no exclude_input_in_output): streamed responses carry the prompt and all text so far.
        self.legacy = not self._has("exclude_input_in_output")

    def request(self, prompt: str, sampling: Sampling, *, stream: bool, turns: Turns | None = None) -> TritonRequest:
        parameters: dict[str, Any] = {"max_tokens": sampling.max_tokens, **sampling.settings}
        if sampling.stop:
            parameters["stop"] = list(sampling.stop)
        if sampling.guide is not None and sampling.guide.vllm_key:
            parameters[sampling.guide.vllm_key] = sampling.guide.vllm_value()
        parameters.update(sampling.extra)
        inputs = {self.text_input.name: self._cast(self.text_input.name, prompt)}
        if self._has("sampling_parameters"):
            inputs["sampling_parameters"] = self._cast(
                "sampling_parameters", json.dumps(parameters, ensure_ascii=False)
            )
        if self._has("stream"):  # r23.10's full sample config requires it: send it, False too
            inputs["stream"] = self._cast("stream", stream)
        if not stream and not self.legacy:
            inputs["exclude_input_in_output"] = self._cast("exclude_input_in_output", True)
        for name in self.COUNTS:
            if self._has(name):
                inputs[name] = self._cast(name, True)
        echo = prompt.encode() if self.legacy else None  # the legacy backend echoes in both modes
        return TritonRequest(inputs, echo=echo, cumulative=stream and self.legacy)

    def read(self, outputs: Mapping[str, Any]) -> Piece:
        reason = _first(outputs.get("finish_reason"))
        return Piece(
            text=_first_bytes(outputs.get(self.text_output.name)),
            num_input_tokens=_first_int(outputs.get("num_input_tokens")),
            num_output_tokens=_first_int(outputs.get("num_output_tokens")),
            finish_reason=reason.decode() if isinstance(reason, bytes) else reason,
        )


def explain(error: XclientError, request: TritonRequest) -> XclientError:
    """``error`` with a hint when the server's message hides the reason, else ``error`` itself: the vLLM
    backend r25.01+ turns any bad ``sampling_parameters`` (an unknown key, an invalid value) into
    :data:`LORA_NAME_ERROR`, the reason only in the server log; the hint names what was sent."""
    if LORA_NAME_ERROR not in str(error) or "sampling_parameters" not in request.inputs:
        return error
    sent = _first_bytes(request.inputs["sampling_parameters"]) or b""
    hint = (
        f"{error.message} (the vLLM backend, r25.01 and later, reports any sampling parameter it cannot "
        f"take this way: an unknown key or an invalid value; Xclient sent sampling_parameters "
        f"{sent.decode('utf-8', 'replace')}; the server log names the reason)"
    )
    explained = type(error)(
        hint,
        model=error.model,
        input=error.input,
        status=error.status,
        server_message=error.server_message,
        retryable=error.retryable,
    )
    explained.__cause__ = error
    return explained


#: TensorRT-LLM inputs under every name they had: setting -> names, newest first.
TRTLLM_INPUTS: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens", "request_output_len"),
    "min_tokens": ("min_tokens", "min_length"),
    "seed": ("seed", "random_seed"),
    "top_k": ("top_k", "runtime_top_k"),
    "top_p": ("top_p", "runtime_top_p"),
    "temperature": ("temperature",),
    "repetition_penalty": ("repetition_penalty",),
    "presence_penalty": ("presence_penalty",),
    "frequency_penalty": ("frequency_penalty",),
    "length_penalty": ("length_penalty", "len_penalty"),
    "stream": ("stream", "streaming"),
    "stop": ("stop_words",),
}


class TrtllmBackend(Backend):
    """TensorRT-LLM's ``ensemble`` / ``tensorrt_llm_bls`` (docs/protocols.md section 2): a batch axis (added by
    the client), each setting sent to the input of its current or former name, cast to its declared dtype;
    the stop list as ``stop_words``; ``model_kwargs`` keys name other inputs (``bad_words``, ``end_id``...).

    Cancelling a stream (a stop word, leaving it early) does not reach the engine behind an ensemble or a
    BLS in Triton 2.51: it runs on to ``max_tokens``, so cap ``max_tokens`` on such deployments."""

    name: BackendName = "tensorrt_llm"
    #: Token counts, asked for where the config declares them (TensorRT-LLM's triton_backend; per response).
    COUNTS = ("return_num_input_tokens", "return_num_output_tokens")

    def __init__(self, config: ModelConfig, input_name: str | None = None, output_name: str | None = None) -> None:
        super().__init__(config, input_name, output_name)
        parameters = config.raw.get("parameters", {}) if isinstance(config.raw, Mapping) else {}
        accumulate = parameters.get("accumulate_tokens", {}).get("string_value", "")
        self.accumulate = str(accumulate).lower() == "true"  # BLS: streamed responses carry all text so far
        if self._input("max_tokens") is None:
            raise incompatible(
                config, _ADAPTER, f"TensorRT-LLM needs a max_tokens input; its inputs: {describe(config.inputs)}"
            )

    def _input(self, setting: str) -> str | None:
        """The model's input for ``setting`` under its current or a former name."""
        return next((name for name in TRTLLM_INPUTS.get(setting, (setting,)) if self._has(name)), None)

    def request(self, prompt: str, sampling: Sampling, *, stream: bool, turns: Turns | None = None) -> TritonRequest:
        """Echo rules (docs/protocols.md section 2): streamed responses never carry the prompt; a
        non-streaming one does unless ``exclude_input_in_output`` (v0.19+) or the engine's own parameter
        excludes it. So a decoupled model that cannot be asked to exclude it streams even for ``invoke``
        (the caller joins the text); a coupled one gets its echo stripped, exactly or as decoded."""
        values: dict[str, Any] = {"max_tokens": sampling.max_tokens, **sampling.settings}
        if sampling.stop:
            values["stop"] = list(sampling.stop)
        can_stream = self.streams and self._input("stream") is not None
        excluded = self._has("exclude_input_in_output")
        stream = can_stream and (stream or not excluded)
        if self._input("stream") is not None:
            values["stream"] = stream
        if not stream and excluded:
            values["exclude_input_in_output"] = True
        inputs = {self.text_input.name: self._cast(self.text_input.name, prompt)}
        for setting, value in values.items():
            name = self._input(setting)
            if name is None:
                raise XclientValueError(
                    f"Model {self.config.name!r} (TensorRT-LLM) has no input for {setting!r} (looked for "
                    f"{' or '.join(map(repr, TRTLLM_INPUTS.get(setting, (setting,))))}); its inputs: "
                    f"{describe(self.config.inputs)}",
                    model=self.config.name,
                )
            inputs[name] = self._cast(name, value)
        guide = sampling.guide
        if guide is not None and self._has("guided_decoding_guide_type"):
            kind = "json_schema" if guide.schema is not None else "json"
            inputs["guided_decoding_guide_type"] = self._cast("guided_decoding_guide_type", kind)
            if guide.schema is not None and self._has("guided_decoding_guide"):
                schema = json.dumps(dict(guide.schema), ensure_ascii=False)
                inputs["guided_decoding_guide"] = self._cast("guided_decoding_guide", schema)
        for name in self.COUNTS:
            if self._has(name):
                inputs[name] = self._cast(name, True)
        inputs.update(self._extra_inputs(sampling))
        echo = None if stream or excluded else prompt.encode()
        return TritonRequest(
            inputs,
            echo=echo,
            cumulative=stream and self.accumulate,
            loose_echo=echo is not None,
            counted_max_tokens=sampling.max_tokens if stream else None,
        )

    def read(self, outputs: Mapping[str, Any]) -> Piece:
        """The text, and the token counts when asked for: ``num_output_tokens`` is the engine's
        ``output_ids`` of this response (one per streamed token; the echoed prompt too, when not excluded)."""
        return Piece(
            text=_first_bytes(outputs.get(self.text_output.name)),
            num_input_tokens=_first_int(outputs.get("num_input_tokens")),
            num_output_tokens=_first_int(outputs.get("num_output_tokens")),
        )


class TextBackend(Backend):
    """A generic text model: the prompt goes to its one BYTES input, the text comes from its BYTES output.
    It takes no generation settings (they are not sent; the stop list is still enforced client-side);
    ``model_kwargs`` keys name other inputs of the model."""

    name: BackendName = "text"
    _default_input = None
    _default_output = None

    def request(self, prompt: str, sampling: Sampling, *, stream: bool, turns: Turns | None = None) -> TritonRequest:
        inputs = {self.text_input.name: self._cast(self.text_input.name, prompt)}
        return TritonRequest({**inputs, **self._extra_inputs(sampling)})


#: Xclient's setting names (vLLM's) -> FastDeploy's task fields. FastDeploy has no ``top_k``.
FASTDEPLOY_FIELDS = {
    "max_tokens": "max_dec_len",
    "min_tokens": "min_dec_len",
    "top_p": "topp",
    "temperature": "temperature",
    "repetition_penalty": "penalty_score",
    "presence_penalty": "presence_score",
    "frequency_penalty": "frequency_score",
    "seed": "seed",
}


class FastDeployBackend(Backend):
    """PaddlePaddle FastDeploy's LLM serving (docs/protocols.md section 8): one JSON task per request in
    ``IN`` (a fresh ``req_id`` each time, the prompt as ``text`` or the chat as ``messages`` + ``system``,
    the settings under FastDeploy's names), one JSON result per response in ``OUT``, ``is_end`` on the
    last one, ``error_msg`` / ``error_code`` on a failure. The server applies its own chat template.
    Stop sequences are enforced client-side (the stream is cancelled), as for every backend."""

    name: BackendName = "fastdeploy"
    server_template = True
    _default_input = "IN"
    _default_output = "OUT"

    def task(self, prompt: str | None, sampling: Sampling, turns: Turns | None = None) -> dict[str, Any]:
        """The task dict for a prompt (``text``) or a chat (``messages``, ``system``)."""
        task: dict[str, Any] = {"req_id": uuid.uuid4().hex}
        if turns is not None:
            task.update(fastdeploy_messages(turns, self.config.name))
        else:
            task["text"] = prompt
        values = {"max_tokens": sampling.max_tokens, **sampling.settings}
        for setting, value in values.items():
            field = FASTDEPLOY_FIELDS.get(setting)
            if field is None:
                raise XclientValueError(
                    f"Model {self.config.name!r} (FastDeploy) has no setting {setting!r}; it takes "
                    f"{', '.join(FASTDEPLOY_FIELDS)} (FastDeploy's {', '.join(FASTDEPLOY_FIELDS.values())})",
                    model=self.config.name,
                )
            task[field] = value
        task.update(sampling.extra)  # model_kwargs: FastDeploy's own fields (eos_token_ids, return_all_tokens...)
        return task

    def request(self, prompt: str, sampling: Sampling, *, stream: bool, turns: Turns | None = None) -> TritonRequest:
        return self.task_request(self.task(prompt, sampling, turns))

    def task_request(self, task: Mapping[str, Any]) -> TritonRequest:
        """The request that sends ``task``; its reader knows the task's ``max_dec_len`` (for the finish reason)."""
        name = self.text_input.name
        inputs = {name: self._cast(name, json.dumps([task], ensure_ascii=False))}
        max_dec_len = task.get("max_dec_len")
        return TritonRequest(inputs, read=lambda outputs: self.piece(self.result(outputs), max_dec_len))

    def result(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """One response's result dict (the server sends a list of one, or one dict for an error); an
        ``error_msg`` raises :class:`~Xclient.exceptions.InferenceServerError` with the server's message."""
        raw = _first_bytes(outputs.get(self.text_output.name))
        try:
            result = json.loads(raw.decode("utf-8", "replace")) if raw is not None else None
        except ValueError as e:
            raise incompatible(self.config, _ADAPTER, f"its {self.text_output.name} output is not JSON ({e})") from None
        if isinstance(result, list):
            result = result[0] if result else None
        if not isinstance(result, dict):
            raise incompatible(
                self.config, _ADAPTER, f"its {self.text_output.name} output is not a FastDeploy result: {raw!r:.80}"
            )
        if result.get("error_msg"):
            code = result.get("error_code")
            message = str(result["error_msg"])
            raise InferenceServerError(
                f"Model {self.config.name!r} (FastDeploy) refused the request (error_code {code}): {message}",
                model=self.config.name,
                status=None if code is None else str(code),
                server_message=message,
            )
        return result

    def read(self, outputs: Mapping[str, Any]) -> Piece:
        return self.piece(self.result(outputs), None)

    @staticmethod
    def piece(result: Mapping[str, Any], max_dec_len: int | None) -> Piece:
        """A result dict as a :class:`Piece`: the token, its ids counted, the prompt's tokens; at the end
        (``is_end`` 1, a response with no new token: ``send_idx`` counts the tokens before it) the finish
        reason, ``"length"`` when ``max_dec_len`` tokens came."""
        usage = result.get("usage") or {}
        reason = None
        if result.get("is_end") == 1:
            generated = result.get("send_idx")
            full = max_dec_len is not None and generated is not None and generated >= max_dec_len
            reason = "length" if full else "stop"
        token = result.get("token", "")
        text = "".join(token) if isinstance(token, list) else str(token)
        return Piece(
            text=text.encode("utf-8", "surrogateescape"),
            num_input_tokens=usage.get("prompt_tokens"),
            num_output_tokens=len(result.get("token_ids") or ()),
            finish_reason=reason,
        )


def fastdeploy_messages(turns: Turns, model: str) -> dict[str, Any]:
    """A chat in FastDeploy's form: ``system`` (the system turns, joined) and ``messages``, user and
    assistant turns in turn, ending with a user turn (what its checker and ChatBot accept). Consecutive
    turns of one role are joined into one (one line apart); a chat that starts with the assistant or
    ends without a user turn cannot be said in this form, and is refused before anything is sent."""
    system = [text for role, text in turns if role == "system"]
    messages: list[dict[str, str]] = []
    for role, text in turns:
        if role == "system":
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + text
        else:
            messages.append({"role": role, "content": text})
    roles = [message["role"] for message in messages]
    expected = ["user" if index % 2 == 0 else "assistant" for index in range(len(roles))]
    if not roles or roles != expected or roles[-1] != "user":
        raise XclientValueError(
            f"Model {model!r} (FastDeploy) takes user and assistant turns in turn, starting and ending with a "
            f"user turn (system turns apart); got {roles}. Set chat_template=... to render the chat "
            "client-side instead",
            model=model,
        )
    return {"messages": messages, **({"system": "\n".join(system)} if system else {})}


_CLASSES: dict[BackendName, type[Backend]] = {
    "vllm": VllmBackend,
    "tensorrt_llm": TrtllmBackend,
    "fastdeploy": FastDeployBackend,
    "text": TextBackend,
}


def detect_backend_name(config: ModelConfig) -> BackendName:
    """Which contract a model config speaks (see the module docstring for the rules)."""
    names = {spec.name for spec in config.inputs}
    if config.backend == "vllm" or {"text_input", "sampling_parameters"} <= names:
        return "vllm"
    if "text_input" in names and names & {"max_tokens", "request_output_len"}:
        return "tensorrt_llm"
    if config.decoupled and names == {"IN"} and {spec.name for spec in config.outputs} == {"OUT"}:
        return "fastdeploy"
    if any(map(_is_text, config.inputs)) and any(map(_is_text, config.outputs)):
        return "text"  # which of several: by name, or input_name/output_name (TextBackend says)
    raise incompatible(
        config,
        _ADAPTER,
        "it is neither a vLLM model (text_input, sampling_parameters), a TensorRT-LLM model (text_input, "
        "max_tokens), a FastDeploy model (decoupled, IN, OUT) nor a text model (one BYTES input, one BYTES "
        f"output); its inputs: {describe(config.inputs)}; its outputs: {describe(config.outputs)}",
    )


def detect_backend(
    config: ModelConfig,
    override: BackendName | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
) -> Backend:
    """The :class:`Backend` for ``config``: detected, or the one ``override`` names (its tensors must fit);
    ``input_name``/``output_name`` name the prompt input and the text output when detection cannot."""
    name = override or detect_backend_name(config)
    if name not in _CLASSES:
        raise XclientValueError(f"backend: expected one of {', '.join(BACKENDS)} or None, got {name!r}")
    return _CLASSES[name](config, input_name, output_name)


def sampling_settings(values: Mapping[str, Any], names: Sequence[str] = SAMPLING_FIELDS) -> dict[str, Any]:
    """The settings that are set (not None), as native JSON types."""
    return {name: values[name] for name in names if values.get(name) is not None}
