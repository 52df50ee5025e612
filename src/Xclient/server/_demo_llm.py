"""Stand-ins for LLMs served on Triton: the Python-backend code behind the demo models
``Qwen2-0.5B-Instruct`` (the vLLM backend's contract) and ``ensemble`` (TensorRT-LLM's), and the
LLM test models. They reproduce the backends' *tensor contracts*, not a language model.

The "generation" is deterministic and readable: a templated answer in the language of the last user
turn (read from a ChatML or Llama 3 prompt, or the raw prompt), emitted one token at a time, where a
token is one CJK character, one word or one punctuation mark (:func:`tokenize`).

- :class:`VllmStandIn` speaks the vLLM backend's contract (docs/protocols.md section 1) as its
  ``src/model.py`` does at the release named by the config parameter ``vllm_release``: sampling
  parameters as JSON (unknown keys fail the request, default ``max_tokens`` 16), server-side ``stop``
  (the stop string is removed), cumulative or delta text, where the final flag goes, the echoed prompt,
  the ``return_*`` outputs, errors and cancellation.
- :class:`TrtllmStandIn` speaks TensorRT-LLM's (section 2, ``ensemble`` / ``tensorrt_llm_bls``) as the
  preprocessing, engine and postprocessing chain does at the release named by ``trtllm_release``: a
  batch axis, typed scalar inputs under the names the config declares, ``stop_words`` kept in the
  output, the prompt echoed (decoded without special tokens) unless excluded, deltas or accumulated
  text when streaming.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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
_Step = TypeVar("_Step")

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

    def _pace(self, request: Any, prompt: str, tokens: Sequence[_Step]) -> Iterator[tuple[int, _Step]]:
        """The tokens (or engine steps), paced; logs and stops on cancellation, raises after ``fail_after_tokens``."""
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


def release(text: str) -> tuple[int, int]:
    """A backend release as a comparable pair: ``"r24.07"`` -> (24, 7), ``"v0.13.0"`` -> (0, 13).

    >>> release("r23.10") < release("r24.02") < release("r24.12")
    True
    """
    numbers = [int(part) for part in re.findall(r"\d+", text)]
    return (numbers[0], numbers[1]) if len(numbers) > 1 else (numbers[0], 0)


def vllm_steps(text: str, max_tokens: int, stop: list[str], *, take_back: bool) -> list[tuple[str, str | None]]:
    """The vLLM engine's outputs for one request: per generated token, (the text so far, the finish reason
    or None). The step that completes a stop string finishes with the text cut before it.

    ``take_back`` (vLLM <= 0.3): the text so far includes the start of a stop string until the stop is
    complete, so the last output is shorter than the one before. Otherwise (vLLM >= 0.4), the end of the
    text that could begin a stop string is held back until the string is complete or ruled out.

    >>> vllm_steps("今天天气好", 10, ["天气"], take_back=True)
    [('今', None), ('今天', None), ('今天天', None), ('今天', 'stop')]
    >>> vllm_steps("今天天气好", 10, ["天气"], take_back=False)
    [('今', None), ('今', None), ('今天', None), ('今天', 'stop')]
    """
    stops = [s for s in stop if s]
    steps: list[tuple[str, str | None]] = []
    so_far = ""
    tokens = tokenize(text)
    for index, token in enumerate(tokens):
        so_far += token
        hits = [so_far.find(s) for s in stops if s in so_far]
        if hits:
            steps.append((so_far[: min(hits)], "stop"))
            return steps
        done = index + 1 == max_tokens or index + 1 == len(tokens)
        reason = ("length" if index + 1 == max_tokens else "stop") if done else None
        if take_back or done:
            steps.append((so_far, reason))
        else:
            held = max((n for s in stops for n in range(1, len(s)) if so_far.endswith(s[:n])), default=0)
            steps.append((so_far[: len(so_far) - held], None))
        if done:
            return steps
    return steps


class VllmStandIn(_StandIn):
    """The vLLM backend's contract (docs/protocols.md section 1), release by release (``vllm_release`` in the
    config's parameters, default r24.12; docs/protocols.md lists what each release does):

    - r23.10-r24.02 (vLLM <= 0.3): every response, streamed or not, carries the prompt and all text so
      far; a stop string's start is streamed, then taken back.
    - r23.10-r24.01: a separate empty final response ends every request (after an error or a
      cancellation too); r24.02+: the final flag sits on the last text response (or the error).
    - r24.03+: streamed responses carry the new text only; ``exclude_input_in_output``.
    - r24.02-r24.07: a cancelled stream gets no further response at all; r24.08+: a CANCELLED error.
    - r24.12+: the ``return_*`` outputs; r25.01+: bad ``sampling_parameters`` fail as
      ``'NoneType' object has no attribute 'lora_name'`` (the reason goes to the log only).

    ``execute`` returns at once and each request is generated on its own thread, so one instance serves
    many requests, as vLLM does."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        setting = self.config.get("parameters", {}).get("vllm_release", {}).get("string_value") or "r24.12"
        self.release = release(setting)
        self.cumulative = self.release < (24, 3)  # vLLM <= 0.3: prompt + all text so far
        self.empty_final = self.release < (24, 2)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        last = 0 if self.empty_final else final
        try:
            self._generate(request, sender.send)
        except _Cancelled:
            if self.release >= (24, 8):
                sender.send(self._error("Request was cancelled", cancelled=True), flags=final)
            # r24.02-r24.07: nothing more is sent; r23.10-r24.01: the empty final response below
        except Exception as e:  # the backend answers every failure with an error response
            self.logger.log_error(f"[vllm] Error generating stream: {e}")
            response = self.pb.InferenceResponse(
                output_tensors=[self.pb.Tensor("text_output", self._bytes(["N/A"]))],
                error=self.pb.TritonError(f"Error generating stream: {e}"),
            )
            sender.send(response, flags=last)
        if self.empty_final:
            sender.send(flags=final)

    def _generate(self, request: Any, send: Callable[..., None]) -> None:
        final = 0 if self.empty_final else self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        raw = self._value(request, "text_input")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        stream = bool(self._value(request, "stream") or False)
        exclude = self._value(request, "exclude_input_in_output") if self.release >= (24, 3) else None
        prepend = (not exclude) if exclude is not None else not stream
        if self.release >= (24, 3) and prepend and stream:
            raise ValueError("When streaming, `exclude_input_in_output` = False is not allowed.")
        if self.cumulative:
            prepend = True
        params = self._sampling_parameters(request)
        stop = params.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = params.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS)
        steps = vllm_steps(
            answer(prompt, self.model_name, guide=structured_guide(params)), max_tokens, stop, take_back=self.cumulative
        )
        asked = {
            name: self.release >= (24, 12) and bool(self._value(request, f"return_{name}") or False)
            for name in _VLLM_EXTRA_OUTPUTS
        }
        num_input = len(tokenize(prompt))
        if not stream:
            for _ in self._pace(request, prompt, steps):
                pass
            text, reason = steps[-1]
            send(self._response((prompt if prepend else "") + text, asked, num_input, len(steps), reason), flags=final)
            return
        sent = 0  # characters of the text so far already sent (delta releases)
        for index, (text, reason) in self._pace(request, prompt, steps):
            delta = prompt + text if self.cumulative else text[sent:]
            sent = max(sent, len(text))
            flags = final if index == len(steps) - 1 else 0
            send(self._response(delta, asked, num_input, 1, reason), flags=flags)

    def _sampling_parameters(self, request: Any) -> dict[str, Any]:
        raw = self._value(request, "sampling_parameters")
        text = raw.decode("utf-8") if isinstance(raw, bytes) else (request.parameters() if raw is None else str(raw))
        params = {k: v for k, v in json.loads(text or "{}").items() if v is not None}
        try:
            for key in params:
                if key not in SAMPLING_KEYS:
                    raise TypeError(f"Unexpected keyword argument '{key}'")
            max_tokens = params.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS)
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise ValueError(f"max_tokens must be at least 1, got {max_tokens!r}.")
            stop = params.get("stop")
            if stop is not None and not (isinstance(stop, str) or all(isinstance(s, str) for s in stop)):
                raise ValueError(f"stop must be a str or a list of str, got {stop!r}.")
        except (TypeError, ValueError) as e:
            if self.release < (25, 1):
                raise
            # r25.01+: TritonSamplingParams.from_dict logs the reason and returns None
            self.logger.log_error(f"[vllm] Was trying to create `TritonSamplingParams`, but got exception: {e}")
            raise AttributeError("'NoneType' object has no attribute 'lora_name'") from None
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


_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]*\|>")


def decode_skipping_special_tokens(text: str) -> str:
    """``text`` as a tokenizer's ``decode(..., skip_special_tokens=True)`` gives it back: the special
    markers (``<|im_start|>``, ``<|eot_id|>``...) are gone, what was between them stays.

    >>> decode_skipping_special_tokens("<|im_start|>user\\n你好<|im_end|>\\n<|im_start|>assistant\\n")
    'user\\n你好\\nassistant\\n'
    """
    return _SPECIAL_TOKEN.sub("", text)


class TrtllmStandIn(_StandIn):
    """TensorRT-LLM's ``ensemble``/``tensorrt_llm_bls`` contract (docs/protocols.md section 2), as its
    preprocessing, tensorrt_llm, postprocessing chain answers (``trtllm_release`` in the config's
    parameters, default v0.20; docs/protocols.md lists what each release does): a batch axis;
    ``max_tokens`` required; each input under the name its config declares.

    - Not streaming, one response carries the whole text. Unless excluded (the request's
      ``exclude_input_in_output``, v0.19+, or else the engine's parameter, ``engine_exclude_input_in_output``
      here, default false), the engine returns the prompt's tokens first, which the postprocessing
      decodes: with ``skip_special_tokens`` (v0.7+) the echo has lost its special markers; v0.5 decodes
      them as they are.
    - Streaming (decoupled, ``stream`` true): each response carries the new text (the ensemble), or all
      text so far with the ``accumulate_tokens`` parameter (the BLS); never the prompt.
    - Decoupled: a separate empty response carries the final flag (as the BLS sends it; for the ensemble,
      Triton's scheduler sends the flag: assumed the same, not checked against a real one).
    - Stop words end the text and stay in it. No usage and no finish reason before v0.20.
    - Token counts (release >= v1.0, an assumption: read in one snapshot of TensorRT-LLM's own
      ``triton_backend``, release not verified; the
      tensorrtllm_backend ensembles v0.7.2 to v0.19.0 have none): with the ``return_num_input_tokens`` /
      ``return_num_output_tokens`` inputs True, each response carries ``num_input_tokens`` (the prompt's
      tokens) and ``num_output_tokens`` (the engine's ``output_ids`` of this response: one token per
      streamed response; the whole answer, the echoed prompt included, when not streaming), INT32 [1]."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        parameters = self.config.get("parameters", {})
        setting = parameters.get("accumulate_tokens", {}).get("string_value", "")
        self.accumulate = setting.lower() == "true"  # tensorrt_llm_bls: cumulative streaming
        self.release = release(parameters.get("trtllm_release", {}).get("string_value") or "v0.20")
        excluded = parameters.get("engine_exclude_input_in_output", {}).get("string_value", "false")
        self.engine_excludes = excluded.lower() == "true"

    def execute(self, requests: list[Any]) -> list[Any] | None:
        decoupled = self.config.get("model_transaction_policy", {}).get("decoupled", False)
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        responses = []
        for request in requests:
            try:
                if decoupled:
                    self._stream(request, request.get_response_sender())
                else:
                    responses.append(self._respond(request))
            except Exception as e:  # the error goes back to the client
                message = "Request was cancelled" if isinstance(e, _Cancelled) else str(e)
                if decoupled:
                    sender = request.get_response_sender()
                    sender.send(self._error(message))
                    sender.send(flags=final)
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
        excluded = self._value(request, "exclude_input_in_output")
        echo = not (bool(excluded) if excluded is not None else self.engine_excludes)
        if echo and self.release >= (0, 7):
            prompt = decode_skipping_special_tokens(prompt)
        text = (prompt if echo else "") + "".join(tokens)
        prompt_tokens = len(tokenize(prompt))
        counts = self._counts(request, prompt_tokens, len(tokens) + (prompt_tokens if echo else 0))
        return self.pb.InferenceResponse([self.pb.Tensor("text_output", self._bytes([text], (1, 1))), *counts])

    def _counts(self, request: Any, num_input: int, num_output: int) -> list[Any]:
        """The token-count outputs the request asked for (release >= v1.0; see the class docstring)."""
        import numpy as np

        if self.release < (1, 0):
            return []
        tensors = []
        for name, value in (("num_input_tokens", num_input), ("num_output_tokens", num_output)):
            if bool(self._value(request, f"return_{name}") or False):
                tensors.append(self.pb.Tensor(name, np.array([[value]], dtype=np.int32)))
        return tensors

    def _stream(self, request: Any, sender: Any) -> None:
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if not bool(self._value(request, "stream") or False):
            sender.send(self._respond(request))
            sender.send(flags=final)
            return
        prompt, tokens, _ = self._read(request)
        text = ""
        prompt_tokens = len(tokenize(prompt))
        for _, token in self._pace(request, prompt, tokens):
            text = text + token if self.accumulate else token
            counts = self._counts(request, prompt_tokens, 1)
            sender.send(
                self.pb.InferenceResponse([self.pb.Tensor("text_output", self._bytes([text], (1, 1))), *counts])
            )
        sender.send(flags=final)
