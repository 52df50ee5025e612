"""ChatMetaLM: a LangChain chat model for LLMs served on Triton (vLLM or TensorRT-LLM backend, or any
text model).

Example::

    from Xclient.llms import ChatMetaLM

    llm = ChatMetaLM(base_url="localhost:8001", model="Qwen2-0.5B-Instruct")
    print(llm.invoke("介绍一下你自己").content)
    for chunk in llm.stream("介绍一下你自己"):
        print(chunk.content, end="", flush=True)

Messages are rendered to the prompt with a chat template (the backends apply none): chosen from the
model name, or set with ``chat_template`` (see :mod:`Xclient.llms._templates`); its stop strings join
the stop list. The backend is detected from the model config (:mod:`Xclient.llms._backends`). Streams
hold back split UTF-8 characters and anything that may begin a stop sequence, end before the first
stop sequence (also when it spans two responses) and cancel the request on the server
(:mod:`Xclient.llms._streaming`).

Tools (:meth:`ChatMetaLM.bind_tools`) are rendered into the template in the model family's format
and the answer is parsed back into ``tool_calls`` (:mod:`Xclient.llms._tools`), streaming too;
:meth:`ChatMetaLM.with_structured_output` uses them, or JSON with the backend's constrained decoding.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, ClassVar, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel, Field

from ..exceptions import XclientValueError
from ._backends import Guide
from ._base import CALL_ALIASES, MODEL_CONFIG, MetaLMBase
from ._engine import Call, arun, run
from ._streaming import Ending
from ._templates import ChatTemplate, ChatTurn, chat_turns, resolve_template
from ._tools import DEFAULT_MAX_CALL_BYTES, CallPiece, Event, ToolCallParser, schema_errors, tool_choice_name


@functools.lru_cache(maxsize=64)
def _template(spec: str | None, model_name: str) -> ChatTemplate:
    return resolve_template(spec, model_name)


class _Answer:
    """One answer's text -> LangChain messages: with tools offered, through a :class:`ToolCallParser`
    (calls become ``tool_calls``/``tool_call_chunks``, the text inside them never reaches ``content``);
    without, the text as it comes."""

    def __init__(self, parser: ToolCallParser | None = None) -> None:
        self._parser = parser
        self._called = False  # a tool call came: the finish reason is "tool_calls", as OpenAI says

    def _events(self, text: str, *, last: bool) -> list[Event]:
        if self._parser is None:
            return [text] if text else []
        events = self._parser.feed(text) if text else []
        events = events + self._parser.finish() if last else events
        self._called = self._called or any(isinstance(e, CallPiece) and e.error is None for e in events)
        return events

    def _metadata(self, ending: Ending) -> dict[str, Any]:
        return {**ending.metadata, "finish_reason": "tool_calls"} if self._called else ending.metadata

    def chunk(self, item: str | Ending) -> ChatGenerationChunk:
        """A streamed delta, or the last chunk: the held-back text, usage and response metadata (once)."""
        last = isinstance(item, Ending)
        events = self._events(item.text if isinstance(item, Ending) else item, last=last)
        content = "".join(e for e in events if isinstance(e, str))
        chunks = [_tool_chunk(e) for e in events if isinstance(e, CallPiece)]
        if not isinstance(item, Ending):
            return ChatGenerationChunk(message=AIMessageChunk(content=content, tool_call_chunks=chunks))
        message = AIMessageChunk(
            content=content,
            tool_call_chunks=chunks,
            usage_metadata=cast("UsageMetadata | None", item.usage),
            response_metadata=self._metadata(item),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

    def result(self, items: Sequence[str | Ending]) -> ChatResult:
        ending = items[-1]
        assert isinstance(ending, Ending)
        text = "".join(item for item in items[:-1] if isinstance(item, str)) + ending.text
        events = self._events(text, last=True)
        calls, invalid = _calls([e for e in events if isinstance(e, CallPiece)])
        message = AIMessage(
            content="".join(e for e in events if isinstance(e, str)),
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=cast("UsageMetadata | None", ending.usage),
            response_metadata=self._metadata(ending),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def _tool_chunk(piece: CallPiece) -> Any:
    """A call as a ``tool_call_chunk``. An invalid one's arguments start with ``[invalid tool call: why]``
    before its raw text, so that LangChain's chunk merging files it under ``invalid_tool_calls`` (its
    partial-JSON reading would otherwise complete a cut-off call into a wrong valid one)."""
    args = piece.args if piece.error is None or piece.id is None else f"[invalid tool call: {piece.error}] {piece.args}"
    return tool_call_chunk(name=piece.name, args=args, id=piece.id, index=piece.index)


def _calls(pieces: Sequence[CallPiece]) -> tuple[list[Any], list[Any]]:
    """The pieces of an answer as LangChain ``tool_calls`` and ``invalid_tool_calls`` (with the error)."""
    merged: dict[int, CallPiece] = {}
    for piece in pieces:
        first = merged.get(piece.index)
        merged[piece.index] = piece if first is None else dataclasses.replace(first, args=first.args + piece.args)
    calls, invalid = [], []
    for piece in merged.values():
        if piece.error is None:
            calls.append(tool_call(name=piece.name or "", args=json.loads(piece.args), id=piece.id))
        else:
            invalid.append(invalid_tool_call(name=piece.name, args=piece.args, id=piece.id, error=piece.error))
    return calls, invalid


def _openai_tool(value: Any, index: int) -> dict[str, Any]:
    """A tool (LangChain tool, pydantic model, function, TypedDict, OpenAI tool dict) as an OpenAI tool dict."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    try:
        converted = convert_to_openai_tool(value)
    except Exception as e:  # LangChain raises ValueError, TypeError, ...
        raise XclientValueError(
            f"tools[{index}]: expected a LangChain tool, a pydantic model, a function or an OpenAI tool dict, "
            f"got {type(value).__name__}: {e}"
        ) from e
    if converted.get("type") != "function" or not converted.get("function", {}).get("name"):
        raise XclientValueError(f"tools[{index}]: expected a function tool with a name, got {converted!r}")
    return converted


def _json_instruction(schema: Mapping[str, Any] | None) -> str:
    if schema is None:
        return "Answer with one JSON object and nothing else."
    return "Answer with one JSON object and nothing else, matching this JSON schema:\n" + json.dumps(
        schema, ensure_ascii=False
    )


def _with_instruction(turns: list[ChatTurn], instruction: str) -> list[ChatTurn]:
    """``instruction`` appended to the system message (one is added first when there is none)."""
    if turns and turns[0].role == "system":
        first = turns[0]
        return [dataclasses.replace(first, content=f"{first.content}\n\n{instruction}"), *turns[1:]]
    return [ChatTurn("system", instruction), *turns]


def _response_schema(response_format: Any) -> tuple[bool, Mapping[str, Any] | None]:
    """``response_format`` (``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
    {"schema": {...}}}``) -> (JSON wanted, its schema)."""
    if response_format is None:
        return False, None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        return True, response_format.get("schema")
    if kind == "json_schema":
        spec = response_format.get("json_schema", {})
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            return True, schema
    raise XclientValueError(
        "response_format: expected {'type': 'json_object'} or {'type': 'json_schema', 'json_schema': "
        f"{{'schema': {{...}}}}}}, got {response_format!r}"
    )


def _json_parser(schema: Any) -> Runnable[Any, Any]:
    """The parser of a JSON answer: into ``schema`` (a pydantic class), or a dict checked against a JSON
    schema; an invalid answer is an OutputParserException carrying the raw text."""
    from langchain_core.output_parsers import PydanticOutputParser
    from langchain_core.utils.pydantic import is_basemodel_subclass

    if isinstance(schema, type) and is_basemodel_subclass(schema):
        return PydanticOutputParser(pydantic_object=schema)
    return _CheckedJsonParser(json_schema=_json_schema(schema) if schema is not None else None)


def _json_schema(schema: Any) -> dict[str, Any]:
    """The JSON schema to constrain and check with: a pydantic class's own, a JSON schema as given, else
    LangChain's conversion (TypedDict, OpenAI tool dict)."""
    from langchain_core.utils.function_calling import convert_to_json_schema
    from langchain_core.utils.pydantic import is_basemodel_subclass

    if isinstance(schema, type) and is_basemodel_subclass(schema):
        model = cast("type[BaseModel]", schema)  # is_basemodel_subclass is no TypeGuard
        return model.model_json_schema()
    if isinstance(schema, Mapping) and "properties" in schema:
        return dict(schema)
    return convert_to_json_schema(schema)


class _CheckedJsonParser(JsonOutputParser):
    """JSON (partial while streaming); the whole answer is also checked against ``schema``."""

    json_schema: dict[str, Any] | None = None

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        value = super().parse_result(result, partial=partial)
        return value if partial else _checked(value, self.json_schema, result[0].text)


def _checked(value: Any, schema: Mapping[str, Any] | None, raw: str) -> Any:
    errors = schema_errors(value, schema) if schema is not None else []
    if errors:
        raise OutputParserException(f"The answer does not match the schema: {'; '.join(errors[:5])}", llm_output=raw)
    return value


class ChatMetaLM(MetaLMBase, BaseChatModel):
    """A chat model on a Triton server: ``invoke``/``stream``/``batch`` and their native asyncio twins.

    Fields (the generation settings also per call, ``invoke(..., temperature=0)``; ``model=`` too):
    ``model`` (alias ``model_name``), ``base_url`` (alias ``server_url``; env ``XCLIENT_URL``, default
    ``localhost:8001``; no scheme: gRPC on port 8001, else HTTP), ``max_tokens`` (default 512, always
    sent; alias ``max_new_tokens``),
    ``temperature``, ``top_p``, ``top_k``, ``min_tokens``, ``repetition_penalty``,
    ``presence_penalty``, ``frequency_penalty``, ``seed`` (None: the server's default; only what is set
    is sent), ``stop`` (alias ``stop_words``), ``model_kwargs``, ``chat_template``, ``backend``,
    ``api_key`` (env ``XCLIENT_API_KEY``), ``headers``, ``timeout`` (per response, default 60 s; alias
    ``inference_timeout_s``), ``init_timeout_s`` (30 s), ``max_retries`` (requests that never reached the
    server; 0). The connection fields are every LangChain class's (:mod:`Xclient._langchain_fields`).

    ``response_metadata`` holds ``model_name``, ``finish_reason`` and ``usage_source``; ``usage_metadata``
    the token counts: the backend's (vLLM's and TensorRT-LLM's ``num_input_tokens``/``num_output_tokens``),
    else ``tokenizer``'s, else None (``usage_source`` None: nothing is guessed). Errors are
    :mod:`Xclient.exceptions` types; in a stream they come after the chunks already delivered.

    Text: a message's content is a str (``""`` is an empty turn) or a list of text blocks; the rendered
    prompt is sent whole, whatever its length (a prompt beyond the model's context is the server's to
    refuse: :class:`~Xclient.exceptions.InferenceServerError`). Other content (an int, None, bytes, an
    image block, a str UTF-8 cannot encode) or input (``invoke(b"...")``), and stop sequences that are
    not str, are an :class:`~Xclient.exceptions.XclientValueError` naming them
    (``messages[0].content: expected a str or a list of text blocks, got int 5``), raised before
    anything is sent. Output bytes that are not valid UTF-8 become U+FFFD, alike in ``invoke`` and
    ``stream`` (a character split across stream responses is joined first, never replaced).
    """

    _operation: ClassVar[str] = "chat"

    model_config = MODEL_CONFIG

    chat_template: str | None = None
    """A built-in template name (``qwen``, ``chatml``, ``internlm2``, ``llama3``, ``raw``), a Jinja2
    template string, or the path of a ``tokenizer_config.json``; None (default): from the model name."""

    @property
    def _llm_type(self) -> str:
        return "xclient-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(**self._ls_params(stop, kwargs, "chat"))  # type: ignore[typeddict-item]

    # -- tool calling and structured output ------------------------------------------------------------

    structured_output_key: Literal["structured_outputs", "guided_decoding"] | None = "structured_outputs"
    """Where constrained decoding goes in vLLM's ``sampling_parameters``: ``structured_outputs`` (Triton's
    vLLM backend r25.12 and later), ``guided_decoding`` (r25.01 to r25.11), None: not sent (older
    backends; the answer is still parsed and validated). TensorRT-LLM models get their
    ``guided_decoding_guide_type``/``guided_decoding_guide`` inputs when their config declares them."""
    max_tool_call_bytes: int = Field(default=DEFAULT_MAX_CALL_BYTES, gt=0)
    """Bytes of a streamed tool call held at most while it is open; a longer call is given up and
    returned as an invalid tool call with its raw text."""

    def _chat_call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], *, stream: bool
    ) -> tuple[Call, _Answer]:
        """The call for ``messages`` (tools and a response format taken from the call's options), and
        how its answer is read."""
        options = dict(kwargs)
        tools = [_openai_tool(t, i) for i, t in enumerate(options.pop("tools", None) or ())]
        choice = tool_choice_name(options.pop("tool_choice", None), [t["function"]["name"] for t in tools])
        wants_json, schema = _response_schema(options.pop("response_format", None))
        for key in ("ls_structured_output_format", "parallel_tool_calls", "strict"):
            options.pop(key, None)
        named = {CALL_ALIASES.get(key, key): value for key, value in options.items()}
        template = self._meta() or _template(self.chat_template, str(named.get("model", self.model_name)))
        offered = tools if tools and choice != "none" else None
        tool_format = template.tool_format if offered else None
        if offered and tool_format is None:
            template.render_chat([], offered)  # raises: this template has no tool format
        turns = chat_turns(messages)
        if wants_json:
            turns = _with_instruction(turns, _json_instruction(schema))
        prefill = tool_format.prefill(choice) if tool_format else ""
        prompt = template.render_chat(turns, offered) + prefill
        stops = (*template.stop, *(tool_format.stop if tool_format else ()))
        # A backend that renders chats itself (FastDeploy) gets the turns, unless a template was chosen or
        # the chat needs what only the client-side template can say (tools, a JSON instruction).
        own_template = self.chat_template is not None or self.meta_template is not None
        plain = not (offered or wants_json or any(turn.tool_calls or turn.role == "tool" for turn in turns))
        server_turns = [(turn.role, turn.content) for turn in turns] if plain and not own_template else None
        call = self._call(prompt, stop, options, stream=stream, template_stop=stops, turns=server_turns)
        if wants_json:
            guide = Guide(schema, self.structured_output_key)
            call = dataclasses.replace(call, sampling=dataclasses.replace(call.sampling, guide=guide))
        parser = None
        if tool_format is not None:
            parser = ToolCallParser(tool_format, prefill=prefill, max_call_bytes=self.max_tool_call_bytes)
        return call, _Answer(parser)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` offered on every call (LangChain tools, pydantic models, functions,
        TypedDicts or OpenAI tool dicts). ``tool_choice``: None/``"auto"`` (the model decides),
        ``"none"`` (no tools offered), ``"any"``/``"required"``/True (a call is forced), or a tool's
        name (that tool is forced). A call is forced by starting the answer with the family's call
        opening (``<tool_call>``...), so it works on every backend."""
        formatted = [_openai_tool(t, i) for i, t in enumerate(tools)]
        if tool_choice is not None:
            tool_choice_name(tool_choice, [t["function"]["name"] for t in formatted])  # bad choice: fail now
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A runnable that answers with an instance of ``schema`` (a pydantic class) or a dict (a JSON
        schema, a TypedDict, an OpenAI tool dict).

        ``method``: ``"function_calling"`` (the schema as a forced tool), ``"json_mode"`` (a JSON object;
        ``schema`` may be None) or ``"json_schema"`` (a JSON object matching ``schema``). The JSON
        methods use the backend's constrained decoding where it has one (see
        ``structured_output_key``), and always tell the model the schema and validate the answer: an
        invalid answer raises OutputParserException with the raw text (``llm_output``).
        ``include_raw=True``: ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`` instead, and
        parsing errors are returned rather than raised. ``strict`` is accepted for compatibility: the
        answer is always validated against the schema.
        """
        from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
        from langchain_core.utils.function_calling import convert_to_json_schema
        from langchain_core.utils.pydantic import is_basemodel_subclass

        if kwargs:
            raise XclientValueError(f"with_structured_output: unexpected arguments {sorted(kwargs)}")
        if method not in ("function_calling", "json_mode", "json_schema"):
            raise XclientValueError(
                f"with_structured_output: method must be 'function_calling', 'json_mode' or 'json_schema', "
                f"got {method!r}"
            )
        if schema is None and method != "json_mode":
            raise XclientValueError(f"with_structured_output: method {method!r} needs a schema, got None")
        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced = {"kwargs": {"method": method}, "schema": convert_to_json_schema(schema) if schema else None}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = _openai_tool(schema, 0)
            name = tool["function"]["name"]
            llm = self.bind_tools([tool], tool_choice=name, ls_structured_output_format=traced)
            if is_model:
                parser = PydanticToolsParser(tools=[cast("type", schema)], first_tool_only=True)
            else:
                parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        else:
            json_schema = _json_schema(schema) if schema is not None else None
            response_format: dict[str, Any] = {"type": "json_object", "schema": json_schema}
            if method == "json_schema":
                response_format = {"type": "json_schema", "json_schema": {"schema": json_schema}}
            llm = self.bind(response_format=response_format, ls_structured_output_format=traced)
            parser = _json_parser(schema)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, answer = self._chat_call(messages, stop, kwargs, stream=False)
        return answer.result(list(run(self._engine(), call)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, answer = self._chat_call(messages, stop, kwargs, stream=False)
        return answer.result([item async for item in arun(self._engine(), call)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call, answer = self._chat_call(messages, stop, kwargs, stream=True)
        yield from self._chunks(call, run_manager, answer.chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call, answer = self._chat_call(messages, stop, kwargs, stream=True)
        async for chunk in self._achunks(call, run_manager, answer.chunk):
            yield chunk
