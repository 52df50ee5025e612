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
(:mod:`Xclient.llms._streaming`). Tool calling and structured output are not supported.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from ._base import CALL_ALIASES, MODEL_CONFIG, MetaLMBase
from ._engine import Call, arun, run
from ._streaming import Ending
from ._templates import ChatTemplate, message_turns, resolve_template


@functools.lru_cache(maxsize=64)
def _template(spec: str | None, model_name: str) -> ChatTemplate:
    return resolve_template(spec, model_name)


def _chunk(item: str | Ending) -> ChatGenerationChunk:
    """A text delta, or the last chunk: the held-back text, usage and response metadata (once)."""
    if isinstance(item, str):
        return ChatGenerationChunk(message=AIMessageChunk(content=item))
    message = AIMessageChunk(
        content=item.text,
        usage_metadata=cast("UsageMetadata | None", item.usage),
        response_metadata=item.metadata,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


def _result(items: Sequence[str | Ending]) -> ChatResult:
    ending = items[-1]
    assert isinstance(ending, Ending)
    text = "".join(item for item in items[:-1] if isinstance(item, str)) + ending.text
    usage = cast("UsageMetadata | None", ending.usage)
    message = AIMessage(content=text, usage_metadata=usage, response_metadata=ending.metadata)
    return ChatResult(generations=[ChatGeneration(message=message)])


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

    ``response_metadata`` holds ``model_name`` and ``finish_reason``; ``usage_metadata`` the token
    counts when the model reports them (vLLM's ``num_input_tokens``/``num_output_tokens``). Errors are
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

    model_config = MODEL_CONFIG

    chat_template: str | None = None
    """A built-in template name (``qwen``, ``chatml``, ``internlm2``, ``llama3``, ``raw``), a Jinja2
    template string, or the path of a ``tokenizer_config.json``; None (default): from the model name."""

    @property
    def _llm_type(self) -> str:
        return "xclient-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(**self._ls_params(stop, kwargs, "chat"))  # type: ignore[typeddict-item]

    def _chat_call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], *, stream: bool
    ) -> Call:
        named = {CALL_ALIASES.get(key, key): value for key, value in kwargs.items()}
        template = self._meta() or _template(self.chat_template, str(named.get("model", self.model_name)))
        turns = message_turns(messages)
        prompt = template.render(turns)
        # A backend that renders chats itself (FastDeploy) gets the turns, unless a template was chosen.
        server_turns = None if self.chat_template is not None or self.meta_template is not None else turns
        return self._call(prompt, stop, kwargs, stream=stream, template_stop=template.stop, turns=server_turns)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _result(list(run(self._engine(), self._chat_call(messages, stop, kwargs, stream=False))))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._chat_call(messages, stop, kwargs, stream=False)
        return _result([item async for item in arun(self._engine(), call)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(self._chat_call(messages, stop, kwargs, stream=True), run_manager, _chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._achunks(self._chat_call(messages, stop, kwargs, stream=True), run_manager, _chunk):
            yield chunk
