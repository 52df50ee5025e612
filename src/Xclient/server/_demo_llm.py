"""Stand-ins for LLMs served on Triton: the Python-backend code behind the demo models
``Qwen2-0.5B-Instruct`` (the vLLM backend's contract) and ``ensemble`` (TensorRT-LLM's), and the
LLM test models. They reproduce the backends' *tensor contracts*, not a language model.

The "generation" is deterministic and readable: a templated answer in the language of the last user
turn (read from a ChatML or Llama 3 prompt, or the raw prompt), emitted one token at a time, where a
token is one CJK character, one word or one punctuation mark (:func:`tokenize`).

- :class:`VllmStandIn` speaks PROTOCOLS.md section 1 as the vLLM backend does: sampling parameters as
  JSON (unknown keys fail the request, default ``max_tokens`` 16), server-side ``stop`` (the stop string
  is removed), delta chunks with the final flag on the last text response, the prompt echoed by
  non-streaming calls unless ``exclude_input_in_output``, optional ``return_*`` outputs, cancellation.
  A config without the ``exclude_input_in_output`` input gets the r23.10-r24.02 behaviour instead:
  cumulative chunks (prompt + all text so far) and a separate empty final response.
- :class:`TrtllmStandIn` speaks section 2 (``ensemble`` / ``tensorrt_llm_bls``): a batch axis, typed
  scalar inputs under either name of a renamed input, ``stop_words`` (the stop word stays in the output,
  as TensorRT-LLM does), the prompt echoed unless ``exclude_input_in_output``; decoupled configs stream
  deltas, or all text so far with the ``accumulate_tokens`` parameter (``tensorrt_llm_bls``).

Tool use and structured output, a stand-in too (:func:`tool_answer`, :func:`guided_answer`): when the
prompt offers tools in the Hermes format ChatMetaLM renders, the answer is a ``<tool_call>`` for each
tool the question names (or the forced one), then a final answer quoting the tool results; with vLLM's
``structured_outputs`` / ``guided_decoding`` sampling parameter, JSON that matches its schema.

Model config ``parameters`` tune a model for tests: ``token_delay_s`` (a pause before each token,
spent watching for cancellation), ``fail_after_tokens`` (an error response after that many tokens).

``triton_python_backend_utils`` exists only inside the Python backend: it is imported there, so this
module also imports (and its pure helpers run) anywhere.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: The keys vLLM's ``SamplingParams`` accepts (vLLM 0.11), plus the two the Triton vLLM backend adds.
#: Anything else fails the request, as ``SamplingParams(**params)`` does. ``use_beam_search``,
#: ``length_penalty`` (gone in vLLM 0.6.3) and ``best_of`` (gone in the V1 engine) are not here.
SAMPLING_KEYS = frozenset(
    {
        "n",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "stop_token_ids",
        "ignore_eos",
        "max_tokens",
        "min_tokens",
        "logprobs",
        "prompt_logprobs",
        "detokenize",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
        "output_kind",
        "structured_outputs",
        "logit_bias",
        "allowed_token_ids",
        "extra_args",
        "bad_words",
        "skip_reading_prefix_cache",
        "lora_name",
        "guided_decoding",
    }
)
VLLM_DEFAULT_MAX_TOKENS = 16

#: A token: a special marker, a word (with the spaces before it), or any other single character.
_TOKEN = re.compile(r"<\|[^|<>]*\|>|\s*\w+(?:['.\-]\w+)*|\s*[^\s\w]|\s+", re.ASCII)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)
_LLAMA3_TURN = re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)(?:<\|eot_id\|>|$)", re.DOTALL)
_QUOTED_CHARS = 40


def tokenize(text: str) -> list[str]:
    """The stand-ins' tokens: ``"".join(tokenize(t)) == t``.

    >>> tokenize("你好，Triton Server! ok")
    ['你', '好', '，', 'Triton', ' Server', '!', ' ok']
    """
    return _TOKEN.findall(text)


def parse_turns(prompt: str) -> list[tuple[str, str]]:
    """The (role, content) turns of a ChatML or Llama 3 prompt; a raw prompt is one user turn.

    >>> parse_turns("<|im_start|>user\\n你好<|im_end|>\\n<|im_start|>assistant\\n")
    [('user', '你好'), ('assistant', '')]
    >>> parse_turns("你好")
    [('user', '你好')]
    """
    for pattern in (_CHATML_TURN, _LLAMA3_TURN):
        turns = [(role, content.strip()) for role, content in pattern.findall(prompt)]
        if turns:
            return turns
    return [("user", prompt.strip())]


def answer(prompt: str, model_name: str, guide: dict[str, Any] | None = None) -> str:
    """The stand-in's whole answer to ``prompt``: in Chinese when the last user turn has CJK characters.

    With a structured-output ``guide`` (:func:`structured_guide`), JSON that matches it; when the prompt
    offers tools, the tool-use answer (:func:`tool_answer`) if there is one; a prompt that offers lagent
    ReAct tools, the agent mode's answer (:mod:`._demo_agent`)."""
    from ._demo_agent import agent_answer

    if guide is not None:
        return guided_answer(prompt, guide)
    if (reply := agent_answer(prompt)) is not None:
        return reply
    tool_text = tool_answer(prompt, model_name)
    if tool_text is not None:
        return tool_text
    turns = parse_turns(prompt)
    users = [content for role, content in turns if role == "user"]
    question = users[-1] if users else ""
    if len(question) > _QUOTED_CHARS:
        question = question[:_QUOTED_CHARS] + "…"
    if _CJK.search(question):
        return (
            f"你好！我是{model_name}的演示替身，一个在 Triton 上运行的确定性程序，并不是真正的大语言模型。"
            f"你刚才说的是“{question}”。这是我们对话的第{len(users)}轮，我会一个字一个字地回答，方便测试流式输出。"
        )
    return (
        f"Hello! I am a stand-in for {model_name}, a deterministic program running on Triton, not a real "
        f'language model. You said: "{question}". This is turn {len(users)} of our conversation; I answer '
        "word by word so that streaming can be tested."
    )


# -- tool use and structured output (a deterministic stand-in, not a model) ---------------------------
#
# The prompt is read as ChatMetaLM's Hermes-style rendering writes it (Qwen2.5's template): the offered
# tools in the system turn's <tools> block, the assistant's calls as <tool_call> blocks, the results as
# <tool_response> blocks in a user turn, and possibly the start of the answer (a forced call) after the
# last "<|im_start|>assistant\n". The stand-in calls, one per turn, each offered tool that the question
# names (as a word, or by a distinctive part of its name: "weather" for get_weather) and that has not
# been called since, with arguments taken from the question (``name(1, "x")`` call syntax, else numbers
# and quoted text in order, else the question itself); a forced call picks the named tool, else the
# first tool. Once the named tools have answered, it gives a final answer that quotes their results.

_TOOLS_BLOCK = re.compile(r"<tools>\n(.*?)\n</tools>", re.DOTALL)
_CALL_BLOCK = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)
_RESPONSE_BLOCK = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)
_FORCED_NAME = re.compile(r'<tool_call>\n\{"name": "([^"]+)"')
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_QUOTED = re.compile(r"“([^”]+)”|\"([^\"]+)\"|'([^']+)'|「([^」]+)」")
_ASSISTANT_START = "<|im_start|>assistant\n"


def offered_tools(prompt: str) -> list[dict[str, Any]]:
    """The ``function`` part of each tool in the prompt's ``<tools>`` block (Hermes style)."""
    block = _TOOLS_BLOCK.search(prompt)
    if not block:
        return []
    tools = [json.loads(line) for line in block.group(1).splitlines() if line.strip()]
    return [tool.get("function", tool) for tool in tools]


def tool_answer(prompt: str, model_name: str) -> str | None:
    """A ``<tool_call>`` block, or a final answer quoting the tool results; None when the prompt offers
    no tools, or no tool is named, forced or answered (then the stand-in answers as usual)."""
    tools = offered_tools(prompt)
    if not tools:
        return None
    head, _, prefill = prompt.rpartition(_ASSISTANT_START)
    if not head or "<|im_end|>" in prefill:
        prefill = ""
    turns = parse_turns(prompt)
    asked = [i for i, (role, text) in enumerate(turns) if role == "user" and not text.startswith("<tool_response>")]
    if not asked:
        return None
    question = turns[asked[-1]][1]
    since = turns[asked[-1] + 1 :]
    called = {
        json.loads(c).get("name") for role, text in since if role == "assistant" for c in _CALL_BLOCK.findall(text)
    }
    results = [r for role, text in since if role == "user" for r in _RESPONSE_BLOCK.findall(text)]
    named = sorted(
        (t for t in tools if _mentions(question, t["name"]) >= 0), key=lambda t: _mentions(question, t["name"])
    )
    pending = [t for t in named if t["name"] not in called]
    if prefill.startswith("<tool_call>"):
        forced = _FORCED_NAME.match(prefill)
        by_name = {t["name"]: t for t in tools}
        tool = by_name.get(forced.group(1)) if forced else None
        tool = tool or (pending or named or tools)[0]
    elif pending:
        tool = pending[0]
    elif results:
        if _CJK.search(question):
            return f"根据工具返回的结果：{'；'.join(results)}。（{model_name}的演示替身依据工具结果作答。）"
        return f"Based on the tool results: {'; '.join(results)}. (A stand-in for {model_name}, answering from them.)"
    else:
        return None
    call = json.dumps({"name": tool["name"], "arguments": tool_arguments(tool, question)}, ensure_ascii=False)
    text = f"<tool_call>\n{call}\n</tool_call>"
    return text[len(prefill) :] if prefill and text.startswith(prefill) else text


_GENERIC_WORDS = frozenset({"function", "tool", "tools", "call", "magic"})


def _mentions(question: str, name: str) -> int:
    """Where ``question`` names tool ``name`` (as a word, or a distinctive part of it: ``weather`` for
    ``get_weather``); -1: nowhere."""
    whole = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", question)
    if whole:
        return whole.start()
    parts = [p for p in re.split(r"[_\W]+", name) if len(p) > 3 and p.lower() not in _GENERIC_WORDS]
    found = [m.start() for p in parts if (m := re.search(rf"\b{re.escape(p)}", question, re.IGNORECASE))]
    return min(found, default=-1)


def tool_arguments(tool: dict[str, Any], question: str) -> dict[str, Any]:
    """Arguments for ``tool`` from ``question``: ``name(3, "x")``/``name(a=3)`` call syntax when the
    question has it, else values taken from the question per parameter type."""
    schema = tool.get("parameters") or {}
    properties = list(schema.get("properties", {}))
    syntax = re.search(rf"{re.escape(tool['name'])}\((.*?)\)", question)
    if syntax:
        values: dict[str, Any] = {}
        for position, part in enumerate(p.strip() for p in syntax.group(1).split(",") if p.strip()):
            key, sep, literal = part.partition("=")
            name, literal = (
                (key.strip(), literal)
                if sep
                else (properties[position] if position < len(properties) else f"arg{position}", part)
            )
            try:
                values[name] = json.loads(literal.strip().replace("'", '"'))
            except ValueError:
                values[name] = literal.strip().strip("'\"")
        return values
    return _instance(schema, _Source(question), schema)


class _Source:
    """The question's numbers and quoted texts, handed out in order."""

    def __init__(self, question: str) -> None:
        self.question = question
        self.numbers = iter(_NUMBER.findall(question))
        self.quoted = iter(next(g for g in m.groups() if g) for m in _QUOTED.finditer(question))


def _instance(schema: dict[str, Any], source: _Source, root: dict[str, Any]) -> Any:
    """A value that matches ``schema`` (the subset tool schemas use), filled from ``source``."""
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _instance(node, source, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _instance(options[0], source, root)
    if "allOf" in schema:
        return _instance(schema["allOf"][0], source, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        required = schema.get("required", list(schema.get("properties", {})))
        props = schema.get("properties", {})
        return {name: _instance(props.get(name, {}), source, root) for name in required}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        number = next(source.numbers, "0")
        return int(float(number)) if kind == "integer" else float(number)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return next(source.quoted, None) or source.question


def structured_guide(params: dict[str, Any]) -> dict[str, Any] | None:
    """The structured-output request in vLLM ``sampling_parameters``, as the Triton vLLM backend reads it:
    ``structured_outputs`` (r25.12+) or ``guided_decoding`` (r25.01-r25.11), a JSON string that the
    backend ``json.loads`` (anything else fails the request, as there)."""
    for key in ("structured_outputs", "guided_decoding"):
        if key in params:
            value = params[key]
            if not isinstance(value, str):
                raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(value).__name__}")
            guide = json.loads(value)
            if not isinstance(guide, dict):
                raise TypeError(f"{key}: expected a JSON object, got {type(guide).__name__}")
            return guide
    return None


def guided_answer(prompt: str, guide: dict[str, Any]) -> str:
    """JSON that satisfies ``guide`` (``json``: a schema; ``json_object``; ``choice``), from the question."""
    users = [content for role, content in parse_turns(prompt) if role == "user"]
    source = _Source(users[-1] if users else prompt)
    if guide.get("json") is not None:
        schema = guide["json"]
        schema = json.loads(schema) if isinstance(schema, str) else schema
        return json.dumps(_instance(schema, source, schema), ensure_ascii=False)
    if guide.get("json_object"):
        return json.dumps({"answer": source.question}, ensure_ascii=False)
    if guide.get("choice"):
        return str(guide["choice"][0])
    raise ValueError(f"the demo stand-in supports json, json_object and choice guides, got {sorted(guide)}")


def generate(text: str, max_tokens: int, stop: list[str], *, keep_stop: bool) -> tuple[list[str], str]:
    """Emit ``text`` token by token until ``max_tokens`` or a stop string: (tokens, finish reason).

    A stop string ends the generation as soon as the text so far contains it; vLLM removes it
    (``keep_stop=False``), TensorRT-LLM keeps it.

    >>> generate("你好。世界", 10, ["。"], keep_stop=False)
    (['你', '好'], 'stop')
    >>> generate("你好。世界", 2, [], keep_stop=False)
    (['你', '好'], 'length')
    """
    tokens: list[str] = []
    so_far = ""
    for token in tokenize(text):
        if len(tokens) == max_tokens:
            return tokens, "length"
        so_far += token
        hits = [(so_far.find(s), s) for s in stop if s and s in so_far]
        if hits:
            index, word = min(hits)
            cut = index + len(word) if keep_stop else index
            consumed = len(so_far) - len(token)
            if cut > consumed:
                tokens.append(so_far[consumed:cut])
            return tokens, "stop"
        tokens.append(token)
    return tokens, "stop"


def _parameter(config: dict[str, Any], name: str, default: float) -> float:
    value = config.get("parameters", {}).get(name, {}).get("string_value")
    return float(value) if value not in (None, "") else default


class _StandIn:
    """What both stand-ins share: config parameters, input reading, pacing and cancellation."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.inputs = {spec["name"] for spec in self.config.get("input", ())}
        self.token_delay_s = _parameter(self.config, "token_delay_s", 0.0)
        self.fail_after = int(_parameter(self.config, "fail_after_tokens", -1))
        self.logger = pb_utils.Logger

    def _value(self, request: Any, *names: str) -> Any:
        """The first element of the first given input among ``names`` (renamed inputs), or None."""
        for name in names:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is not None:
                value = tensor.as_numpy().reshape(-1)
                return value[0] if value.size else None
        return None

    def _list(self, request: Any, name: str) -> list[str]:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return []
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]

    def _cancelled_while_pacing(self, request: Any) -> bool:
        """Wait ``token_delay_s`` in small steps; True as soon as the request is cancelled."""
        deadline = time.monotonic() + self.token_delay_s
        while True:
            if request.is_cancelled():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.01))

    def _pace(self, request: Any, prompt: str, tokens: list[str]) -> Iterator[tuple[int, str]]:
        """The tokens, paced; logs and stops on cancellation, raises after ``fail_after_tokens``."""
        for index, token in enumerate(tokens):
            if index == self.fail_after:
                raise RuntimeError(f"demo failure after {index} tokens 生成失败")
            if self._cancelled_while_pacing(request):
                question = [content for role, content in parse_turns(prompt) if role == "user"][-1:]
                self.logger.log_info(f"[demo] request cancelled after {index} tokens: {question}")
                raise _Cancelled
            yield index, token
        if self.fail_after == len(tokens):
            raise RuntimeError(f"demo failure after {len(tokens)} tokens 生成失败")

    def _error(self, message: str, cancelled: bool = False) -> Any:
        code = self.pb.TritonError.CANCELLED if cancelled else self.pb.TritonError.UNKNOWN
        return self.pb.InferenceResponse(error=self.pb.TritonError(message, code))

    def _bytes(self, values: list[Any], shape: tuple[int, ...] = (-1,)) -> Any:
        import numpy as np

        encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        return np.array(encoded, dtype=object).reshape(shape)


class _Cancelled(Exception):
    pass


class VllmStandIn(_StandIn):
    """The vLLM backend's contract (PROTOCOLS.md section 1): ``execute`` returns at once and each
    request is generated on its own thread, so one instance serves many requests, as vLLM does."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        self.cumulative = "exclude_input_in_output" not in self.inputs  # r23.10-r24.02

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            self._generate(request, sender.send)
        except _Cancelled:
            sender.send(self._error("Request was cancelled", cancelled=True), flags=final)
        except Exception as e:  # noqa: BLE001 - the backend answers every failure with an error response
            response = self.pb.InferenceResponse(
                output_tensors=[self.pb.Tensor("text_output", self._bytes(["N/A"]))],
                error=self.pb.TritonError(f"Error generating stream: {e}"),
            )
            sender.send(response, flags=final)

    def _generate(self, request: Any, send: Callable[..., None]) -> None:
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        raw = self._value(request, "text_input")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        stream = bool(self._value(request, "stream") or False)
        exclude = self._value(request, "exclude_input_in_output")
        prepend = (not exclude) if exclude is not None else not stream
        if prepend and stream and exclude is not None:
            raise ValueError("When streaming, `exclude_input_in_output` = False is not allowed.")
        params = self._sampling_parameters(request)
        stop = params.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = params.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS)
        text = answer(prompt, self.model_name, guide=structured_guide(params))
        tokens, reason = generate(text, max_tokens, stop, keep_stop=False)
        asked = {name: bool(self._value(request, f"return_{name}") or False) for name in _VLLM_EXTRA_OUTPUTS}
        counts = (len(tokenize(prompt)), 0)
        if not stream:
            for _ in self._pace(request, prompt, tokens):
                pass
            text = (prompt if prepend else "") + "".join(tokens)
            send(self._response(text, asked, counts[0], len(tokens), reason), flags=final)
            return
        text = prompt if self.cumulative else ""
        for index, token in self._pace(request, prompt, tokens):
            text = text + token if self.cumulative else token
            last = index == len(tokens) - 1
            flags = final if last and not self.cumulative else 0
            send(self._response(text, asked, counts[0], 1, reason if last else None), flags=flags)
        if self.cumulative or not tokens:
            send(flags=final)  # the older backend's separate, empty final response

    def _sampling_parameters(self, request: Any) -> dict[str, Any]:
        raw = self._value(request, "sampling_parameters")
        text = raw.decode("utf-8") if isinstance(raw, bytes) else (request.parameters() if raw is None else str(raw))
        params = {k: v for k, v in json.loads(text or "{}").items() if v is not None}
        for key in params:
            if key not in SAMPLING_KEYS:
                raise TypeError(f"Unexpected keyword argument '{key}'")
        max_tokens = params.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens!r}.")
        stop = params.get("stop")
        if stop is not None and not (isinstance(stop, str) or all(isinstance(s, str) for s in stop)):
            raise ValueError(f"stop must be a str or a list of str, got {stop!r}.")
        return params

    def _response(self, text: str, asked: dict[str, bool], num_input: int, num_output: int, reason: str | None) -> Any:
        import numpy as np

        pb = self.pb
        tensors = [pb.Tensor("text_output", self._bytes([text]))]
        if asked["finish_reason"]:
            tensors.append(pb.Tensor("finish_reason", self._bytes([str(reason)])))  # "None" until finished
        if asked["num_input_tokens"]:
            tensors.append(pb.Tensor("num_input_tokens", np.array([num_input], dtype=np.uint32)))
        if asked["num_output_tokens"]:
            tensors.append(pb.Tensor("num_output_tokens", np.array([num_output], dtype=np.uint32)))
        if asked["cumulative_logprob"]:
            tensors.append(pb.Tensor("cumulative_logprob", np.array([-0.5 * num_output], dtype=np.float32)))
        if asked["logprobs"]:
            tensors.append(pb.Tensor("logprobs", self._bytes(["null"])))
        return pb.InferenceResponse(output_tensors=tensors)


_VLLM_EXTRA_OUTPUTS = ("finish_reason", "num_input_tokens", "num_output_tokens", "cumulative_logprob", "logprobs")


class TrtllmStandIn(_StandIn):
    """TensorRT-LLM's ``ensemble``/``tensorrt_llm_bls`` contract (PROTOCOLS.md section 2): a batch axis;
    ``max_tokens`` (or ``request_output_len``) required. Decoupled configs stream deltas when ``stream``
    is true; otherwise one response per request carries the whole text (the prompt first, unless
    ``exclude_input_in_output``)."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        setting = self.config.get("parameters", {}).get("accumulate_tokens", {}).get("string_value", "")
        self.accumulate = setting.lower() == "true"  # tensorrt_llm_bls: cumulative streaming

    def execute(self, requests: list[Any]) -> list[Any] | None:
        decoupled = self.config.get("model_transaction_policy", {}).get("decoupled", False)
        responses = []
        for request in requests:
            try:
                if decoupled:
                    self._stream(request, request.get_response_sender())
                else:
                    responses.append(self._respond(request))
            except Exception as e:  # noqa: BLE001 - the error goes back to the client
                message = "Request was cancelled" if isinstance(e, _Cancelled) else str(e)
                if decoupled:
                    final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                    request.get_response_sender().send(self._error(message), flags=final)
                else:
                    responses.append(self._error(message))
        return None if decoupled else responses

    def _read(self, request: Any) -> tuple[str, list[str], str]:
        """(prompt, tokens, reason); one sample per request (a batch axis of 1)."""
        raw = self._value(request, "text_input")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        max_tokens = self._value(request, "max_tokens", "request_output_len")
        if max_tokens is None:
            raise ValueError("input 'max_tokens' is required")
        tokens, reason = generate(
            answer(prompt, self.model_name), int(max_tokens), self._list(request, "stop_words"), keep_stop=True
        )
        return prompt, tokens, reason

    def _respond(self, request: Any) -> Any:
        prompt, tokens, _ = self._read(request)
        for _ in self._pace(request, prompt, tokens):
            pass
        echo = not bool(self._value(request, "exclude_input_in_output") or False)
        text = (prompt if echo else "") + "".join(tokens)
        return self.pb.InferenceResponse([self.pb.Tensor("text_output", self._bytes([text], (1, 1)))])

    def _stream(self, request: Any, sender: Any) -> None:
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if not bool(self._value(request, "stream") or False):
            sender.send(self._respond(request), flags=final)
            return
        prompt, tokens, _ = self._read(request)
        text = ""
        try:
            for index, token in self._pace(request, prompt, tokens):
                text = text + token if self.accumulate else token
                out = self.pb.Tensor("text_output", self._bytes([text], (1, 1)))
                sender.send(self.pb.InferenceResponse([out]), flags=final if index == len(tokens) - 1 else 0)
        except _Cancelled:
            sender.send(self._error("Request was cancelled", cancelled=True), flags=final)
            return
        if not tokens:
            sender.send(flags=final)
