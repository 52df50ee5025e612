"""lagent's ``TritonClient``, on Xclient: agents built on lagent run on models served by Triton's vLLM or
TensorRT-LLM backend, FastDeploy, or a text model (extra ``lagent``).

lagent's own ``TritonClient`` (``lagent.llms.lmdeploy_wrapper``) needs lmdeploy's turbomind Triton
backend, which lmdeploy removed. This one takes the same arguments and answers the same way, so a
lagent user's script runs by changing its import line only::

    # from lagent.llms.lmdeploy_wrapper import TritonClient
    from Xclient.lagent import TritonClient
    from lagent.llms import INTERNLM2_META

    chatbot = TritonClient(tritonserver_addr="localhost:8001", model_name="Qwen2-0.5B-Instruct",
                           meta_template=INTERNLM2_META, session_len=16384 * 2, max_new_tokens=1024,
                           top_p=0.8, top_k=None, temperature=0, repetition_penalty=1.0,
                           stop_words=["<|im_end|>"])
    chatbot.generate(inputs="hello", session_id=2967, request_id="1", sequence_start=True,
                     sequence_end=True, max_new_tokens=2048, temperature=0.8)
    for status, res, _ in chatbot.stream_chat(inputs=[{"role": "user", "content": "hello"}]):
        print(res)

- ``tritonserver_addr`` is ``host:port`` of Triton's **gRPC** endpoint; a URL with a scheme
  (``grpc://``, ``http://``) works too.
- It is built on the engine of :class:`~Xclient.llms.ChatMetaLM` (:mod:`Xclient.llms._engine`): the
  backend is detected from the model config, stop words end the text (and cancel the request), the
  prompt is rendered by Xclient's meta-template renderer, which renders exactly what lagent's
  ``LMTemplateParser`` does, and a meta template's ``end`` strings are stop words too.
- ``generate(list_of_prompts)`` runs them concurrently (at most ``max_concurrency`` at once) and returns
  the answers in input order.
- ``session_id``, ``request_id``, ``sequence_start`` and ``sequence_end`` are accepted for
  compatibility and mean nothing here: the vLLM, TensorRT-LLM and FastDeploy backends are stateless,
  nothing of a conversation is kept on the server, and each call sends its whole prompt.
  ``skip_special_tokens`` is accepted and ignored (the backends decode).
- A prompt of more than ``session_len`` tokens is refused before it is sent (an
  :class:`~Xclient.exceptions.XclientValueError`; counted with ``tokenizer=`` or estimated, see
  :mod:`Xclient.llms._session_len`). Other failures raise Xclient's errors from ``generate``; a stream
  yields ``(ModelStatusCode.SERVER_ERR, message, None)`` and ends, as lagent's status codes say.
- lagent 0.2.4 (the newest on the package index) has no asyncio base class, so there is no asyncio twin.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lagent.llms.base_llm import BaseModel
from lagent.schema import ModelStatusCode

from .exceptions import XclientError
from .llms._backends import Sampling, sampling_settings
from .llms._engine import Call, Engine, Settings, run
from .llms._meta_template import MetaTemplate, join_without_template
from .llms._session_len import check_session_len
from .llms._streaming import Ending

#: lagent's generation parameter -> Xclient's setting (vLLM's names).
_GEN_PARAMS = {
    "max_new_tokens": "max_tokens",
    "top_p": "top_p",
    "top_k": "top_k",
    "temperature": "temperature",
    "repetition_penalty": "repetition_penalty",
}


class MetaTemplateParser:
    """lagent's template-parser interface (``parser(dialog) -> str``) over Xclient's renderer."""

    def __init__(self, meta_template: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.meta_template = meta_template
        self.template = MetaTemplate(meta_template) if meta_template else None

    def __call__(self, dialog: str | Sequence[str | Mapping[str, Any]]) -> str:
        if self.template is None:
            return join_without_template(dialog)
        return self.template.render_dialog(dialog)


class TritonClient(BaseModel):
    """lagent's ``TritonClient`` interface on Xclient (see the module docstring)."""

    def __init__(
        self,
        tritonserver_addr: str,
        model_name: str,
        session_len: int = 32768,
        log_level: str = "WARNING",
        *,
        meta_template: list[dict[str, Any]] | None = None,
        max_new_tokens: int = 512,
        top_p: float | None = 0.8,
        top_k: int | None = 40,
        temperature: float | None = 0.8,
        repetition_penalty: float | None = 1.0,
        stop_words: list[str] | str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 8,
        tokenizer: str | None = None,
    ) -> None:
        super().__init__(
            path=None,
            template_parser=MetaTemplateParser,
            meta_template=meta_template,
            max_new_tokens=max_new_tokens,
            top_p=top_p,
            top_k=top_k,
            temperature=temperature,
            repetition_penalty=repetition_penalty,
            stop_words=stop_words,
        )
        address = tritonserver_addr if "://" in tritonserver_addr else f"grpc://{tritonserver_addr}"
        self.model_name = model_name
        self.session_len = session_len
        self.log_level = log_level
        self.tokenizer = tokenizer
        self.max_concurrency = max_concurrency
        options = {"inference_timeout_s": timeout, "api_key": api_key}
        self._engine = Engine(Settings(server_url=address, options=options))
        parser = self.template_parser
        self._template_stop = parser.template.stop if parser.template is not None else ()

    def generate(
        self,
        inputs: str | list[str],
        session_id: int = 2967,
        request_id: str = "",
        sequence_start: bool = True,
        sequence_end: bool = True,
        skip_special_tokens: bool = False,
        **kwargs: Any,
    ) -> str | list[str]:
        """The completion of a prompt (a str), or of each prompt of a list, concurrently, in input order."""
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        calls = [self._call(prompt, kwargs, stream=False) for prompt in prompts]  # all checked before any is sent
        if len(calls) == 1:
            answers = [_text(run(self._engine, calls[0]))]
        else:
            workers = max(1, min(self.max_concurrency, len(calls)))
            with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="xclient-lagent") as pool:
                answers = list(pool.map(lambda call: _text(run(self._engine, call)), calls))
        return answers[0] if isinstance(inputs, str) else answers

    def stream_chat(
        self,
        inputs: list[dict[str, Any]],
        session_id: int = 2967,
        request_id: str = "",
        sequence_start: bool = True,
        sequence_end: bool = True,
        skip_special_tokens: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[ModelStatusCode, str, None]]:
        """Yield ``(ModelStatusCode.STREAM_ING, text so far, None)`` as tokens come, then
        ``(ModelStatusCode.END, the whole text, None)``; on a server failure
        ``(ModelStatusCode.SERVER_ERR, its message, None)`` ends the stream."""
        call = self._call(self.template_parser(inputs), kwargs, stream=True)
        text = ""
        stream = run(self._engine, call)
        try:
            for item in stream:
                text += item.text if isinstance(item, Ending) else item
                if isinstance(item, Ending):
                    yield ModelStatusCode.END, text, None
                elif item:
                    yield ModelStatusCode.STREAM_ING, text, None
        except XclientError as error:
            yield ModelStatusCode.SERVER_ERR, error.message, None
        finally:
            stream.close()  # leaving early cancels the request on the server

    def close(self) -> None:
        """Close the connections."""
        self._engine.close()

    def _call(self, prompt: str, kwargs: Mapping[str, Any], *, stream: bool) -> Call:
        params = self.update_gen_params(**kwargs)
        stops = params.pop("stop_words", None) or ()
        stops = [stops] if isinstance(stops, str) else list(stops)
        values = {_GEN_PARAMS[key]: value for key, value in params.items() if key in _GEN_PARAMS}
        extra = {key: value for key, value in params.items() if key not in _GEN_PARAMS and value is not None}
        check_session_len(prompt, self.session_len, self.tokenizer, self.model_name)
        sampling = Sampling(
            max_tokens=int(values.pop("max_tokens")),
            settings=sampling_settings(values),
            stop=tuple(dict.fromkeys(s for s in (*stops, *self._template_stop) if s)),
            extra=extra,
        )
        return Call(model=self.model_name, prompt=prompt, sampling=sampling, stream=stream)


def _text(items: Iterator[str | Ending]) -> str:
    return "".join(item.text if isinstance(item, Ending) else item for item in items)


__all__ = ["MetaTemplateParser", "TritonClient"]
