"""MetaLM: a LangChain text-completion LLM (``BaseLLM``) for models served on Triton.

The prompt is sent as it is (no chat template): for completion-style use, or for prompts already
rendered. Same engine, fields and rules as :class:`~Xclient.llms.ChatMetaLM`.

Example::

    from Xclient.llms import MetaLM

    llm = MetaLM(base_url="localhost:8001", model="Qwen2-0.5B-Instruct", max_tokens=64)
    llm.invoke("<|im_start|>user\\n你好<|im_end|>\\n<|im_start|>assistant\\n")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM, LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from ._base import MODEL_CONFIG, MetaLMBase
from ._engine import arun, run
from ._streaming import Ending

#: Prompts of one ``generate`` call run at once (sync: threads; async: tasks).
MAX_CONCURRENT_PROMPTS = 8


def _info(ending: Ending) -> dict[str, Any]:
    """``generation_info``: ``model_name``, ``finish_reason``, ``usage_source`` and, when counted, ``usage``."""
    return {**ending.metadata, **({"usage": ending.usage} if ending.usage else {})}


def _generation(items: Sequence[str | Ending]) -> Generation:
    ending = items[-1]
    assert isinstance(ending, Ending)
    text = "".join(item for item in items[:-1] if isinstance(item, str)) + ending.text
    return Generation(text=text, generation_info=_info(ending))


def _chunk(item: str | Ending) -> GenerationChunk:
    if isinstance(item, str):
        return GenerationChunk(text=item)
    return GenerationChunk(text=item.text, generation_info=_info(item))


def _result(generations: list[Generation], model_name: str) -> LLMResult:
    usages = [g.generation_info["usage"] for g in generations if g.generation_info and "usage" in g.generation_info]
    llm_output: dict[str, Any] = {"model_name": model_name}
    if usages:
        llm_output["token_usage"] = {key: sum(u[key] for u in usages) for key in usages[0]}
    return LLMResult(generations=[[g] for g in generations], llm_output=llm_output)


class MetaLM(MetaLMBase, BaseLLM):
    """A text-completion LLM on a Triton server: the prompt goes as it is; ``invoke``/``stream``/``batch``
    and their native asyncio twins. Fields and defaults: see :class:`~Xclient.llms.ChatMetaLM` (no
    ``chat_template``). ``generation_info`` holds ``model_name``, ``finish_reason``,
    ``usage_source`` and ``usage`` (when counted; ``llm_output["token_usage"]`` sums them).

    Text: each prompt is a str, sent as it is (``""`` too: what an empty prompt gives is the model's
    call); anything else is an :class:`~Xclient.exceptions.XclientValueError` (``prompt: expected a
    str, got int 1``) raised before anything is sent. Long prompts and output bytes that are not valid
    UTF-8 (U+FFFD) are handled as :class:`~Xclient.llms.ChatMetaLM` does."""

    model_config = MODEL_CONFIG

    @property
    def _llm_type(self) -> str:
        return "xclient"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(**self._ls_params(stop, kwargs, "llm"))  # type: ignore[typeddict-item]

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        calls = [self._call(prompt, stop, kwargs, stream=False) for prompt in prompts]
        engine = self._engine()

        def one(call: Any) -> Generation:
            return _generation(list(run(engine, call)))

        if len(calls) == 1:
            return _result([one(calls[0])], self.model_name)
        with ThreadPoolExecutor(min(len(calls), MAX_CONCURRENT_PROMPTS), thread_name_prefix="MetaLM") as pool:
            return _result(list(pool.map(one, calls)), self.model_name)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        calls = [self._call(prompt, stop, kwargs, stream=False) for prompt in prompts]
        engine = self._engine()
        slots = asyncio.Semaphore(MAX_CONCURRENT_PROMPTS)

        async def one(call: Any) -> Generation:
            async with slots:
                return _generation([item async for item in arun(engine, call)])

        return _result(list(await asyncio.gather(*(one(call) for call in calls))), self.model_name)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        yield from self._chunks(self._call(prompt, stop, kwargs, stream=True), run_manager, _chunk)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._achunks(self._call(prompt, stop, kwargs, stream=True), run_manager, _chunk):
            yield chunk
