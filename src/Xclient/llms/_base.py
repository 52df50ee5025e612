"""What ChatMetaLM and MetaLM share: their fields (pydantic v2, env-var defaults), per-call options,
the engine made on first use, and the LangChain metadata."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

try:
    from langchain_core.prompt_values import PromptValue
    from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, field_validator, model_validator
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "ChatMetaLM and MetaLM need the 'langchain' extra: pip install 'llmops-xclient[langchain]'"
    ) from None

from .._langchain_fields import ConnectionFields
from .._text import check_text, check_texts, refuse
from ..exceptions import XclientValueError
from ._backends import SAMPLING_FIELDS, BackendName, Sampling, sampling_settings
from ._engine import Call, Engine, Settings, arun, run
from ._meta_template import MetaTemplate
from ._session_len import check_session_len
from ._streaming import Ending


class _Chunk(Protocol):
    @property
    def text(self) -> str: ...


Chunk = TypeVar("Chunk", bound=_Chunk)

#: What a call may override (``invoke(..., temperature=0.2)``), by field name; and the other names accepted.
CALL_OPTIONS = frozenset({"model", "max_tokens", *SAMPLING_FIELDS, "model_kwargs"})
CALL_ALIASES = {
    "model_name": "model",
    "max_new_tokens": "max_tokens",
    "stop_words": "stop",
    # FastDeploy's names (ChatBot's, fdclient's) for the same settings
    "max_dec_len": "max_tokens",
    "min_dec_len": "min_tokens",
    "topp": "top_p",
    "penalty_score": "repetition_penalty",
    "presence_score": "presence_penalty",
    "frequency_score": "frequency_penalty",
}
DEFAULT_MAX_TOKENS = 512


class _EngineHolder:
    """The engine, made on first use (once, whatever the threads); a copy of the model starts with none
    (its settings may differ)."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self, make: Callable[[], Engine]) -> Engine:
        with self._lock:
            if self.engine is None:
                self.engine = make()
            return self.engine

    def __deepcopy__(self, memo: dict[int, Any]) -> _EngineHolder:
        return _EngineHolder()


#: The pydantic config of ChatMetaLM and MetaLM, set on each (LangChain's base classes would otherwise
#: win the merge, with ``extra="ignore"``: a misspelled field would be dropped silently).
MODEL_CONFIG = ConfigDict(populate_by_name=True, extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)


class MetaLMBase(ConnectionFields):
    """Fields and engine shared by :class:`~Xclient.llms.ChatMetaLM` and :class:`~Xclient.llms.MetaLM`:
    the connection fields of every LangChain class (:class:`~Xclient._langchain_fields.ConnectionFields`:
    ``base_url``/``server_url``, ``model``/``model_name``, ``timeout``, ``max_retries``, ``api_key``...)
    and the generation settings. gRPC streams; HTTP streams through Triton's ``generate_stream``."""

    model_config = MODEL_CONFIG

    max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS, gt=0, validation_alias=AliasChoices("max_tokens", "max_new_tokens")
    )
    """Tokens to generate at most (also ``max_new_tokens``); always sent: vLLM's own default is 16."""
    temperature: float | None = Field(default=None, ge=0)
    """Sampling temperature; None (default): the server's."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling; None: the server's."""
    top_k: int | None = None
    """Top-k sampling; None: the server's."""
    min_tokens: int | None = Field(default=None, ge=0)
    """Tokens to generate at least (``min_length`` on older TensorRT-LLM); None: the server's."""
    repetition_penalty: float | None = None
    """None: the server's."""
    presence_penalty: float | None = None
    """None: the server's."""
    frequency_penalty: float | None = None
    """None: the server's."""
    seed: int | None = None
    """Random seed (``random_seed`` on older TensorRT-LLM); None: the server's."""
    stop: list[str] | None = Field(default=None, validation_alias=AliasChoices("stop", "stop_words"))
    """Stop sequences (also ``stop_words``): the text ends before the first one, which is not returned."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific settings: vLLM ``SamplingParams`` keys (``{"min_p": 0.1}``), or more model
    inputs for TensorRT-LLM and text models (``{"bad_words": ["坏"]}``)."""

    backend: BackendName | None = None
    """``"vllm"``, ``"tensorrt_llm"``, ``"fastdeploy"`` or ``"text"``; None (default): detected from the
    model config."""
    input_name: str | None = None
    """The input that takes the prompt; None: ``text_input``, or detected for a text model."""
    output_name: str | None = None
    """The output with the text; None: ``text_output``, or detected for a text model."""

    streaming: bool = False
    """``invoke`` streams internally (callbacks get each token)."""
    meta_template: list[dict[str, Any]] | None = None
    """A lagent-style meta template (a list of role dicts, e.g. lagent's ``INTERNLM2_META``): ChatMetaLM
    renders messages with it exactly as lagent does (:mod:`Xclient.llms._meta_template`); its ``end``
    strings are stop words, for MetaLM too."""
    session_len: int | None = Field(default=None, gt=0)
    """The model's context in tokens: a longer prompt is refused before it is sent (None: no check).
    Counted with ``tokenizer``, or estimated (:mod:`Xclient.llms._session_len`)."""
    tokenizer: str | None = None
    """The model's ``tokenizer.json`` (or its directory), to count ``session_len`` tokens exactly."""

    _holder: _EngineHolder = PrivateAttr(default_factory=_EngineHolder)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("meta_template")
    @classmethod
    def _valid_meta_template(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is not None:
            MetaTemplate(value)  # raises on a malformed template, naming the item
        return value

    def _meta(self) -> MetaTemplate | None:
        return MetaTemplate(self.meta_template) if self.meta_template is not None else None

    @model_validator(mode="after")
    def _no_field_in_model_kwargs(self) -> MetaLMBase:
        fields = type(self).model_fields
        aliases = {
            choice
            for field in fields.values()
            if isinstance(field.validation_alias, AliasChoices)
            for choice in field.validation_alias.choices
        }
        for key in self.model_kwargs:
            if key in fields or key in aliases or key in CALL_ALIASES:
                raise ValueError(f"model_kwargs: {key!r} is a field: set {key}=... instead")
        return self

    # -- the engine -------------------------------------------------------------------------------

    def _engine(self) -> Engine:
        """The connections, made with the fields' values on first use (no network before the first call)."""
        holder = self._holder
        return holder.engine or holder.get(self._make_engine)

    def _make_engine(self) -> Engine:
        return Engine(
            Settings(
                server_url=self.client_url,
                options=self.client_options(),
                max_retries=self.max_retries,
                backend=self.backend,
                input_name=self.input_name,
                output_name=self.output_name,
            )
        )

    def __copy__(self) -> Any:
        """A copy (``model_copy``) makes its own connections: its settings may differ."""
        copied = super().__copy__()
        copied._holder = _EngineHolder()
        return copied

    def close(self) -> None:
        """Close the sync connections (and their threads); later calls reconnect."""
        if self._holder.engine is not None:
            self._holder.engine.close()

    async def aclose(self) -> None:
        """Close this event loop's connections, and the sync ones; later calls reconnect."""
        if self._holder.engine is not None:
            await self._holder.engine.aclose()

    # -- one call ---------------------------------------------------------------------------------

    def _convert_input(self, model_input: Any) -> Any:
        """LangChain's conversion of ``invoke``'s input (``BaseChatModel``'s or ``BaseLLM``'s, next in the
        MRO), after refusing what it would misread (bytes are a sequence of ints to it) with an error
        that says what is accepted."""
        if isinstance(model_input, (bytes, bytearray)) or not isinstance(model_input, (str, Sequence, PromptValue)):
            raise refuse("input", "a str, a list of messages or a PromptValue", model_input)
        return super()._convert_input(model_input)  # type: ignore[misc]

    def _options(self, stop: Sequence[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The fields, overridden by a call's options (refusing unknown ones)."""
        options: dict[str, Any] = {
            name: getattr(self, name) for name in (*SAMPLING_FIELDS, "max_tokens", "model_kwargs")
        }
        options["model"] = self.model_name
        options["stop"] = self.stop
        for key, value in kwargs.items():
            name = CALL_ALIASES.get(key, key)
            if name in CALL_OPTIONS or name == "stop":
                options[name] = value
            else:
                raise XclientValueError(
                    f"{type(self).__name__}: unknown option {key!r}; a call accepts "
                    f"{', '.join(sorted({*CALL_OPTIONS, 'stop', *CALL_ALIASES}))}"
                )
        if stop is not None:
            options["stop"] = stop
        if options["stop"] is not None:  # one stop string, or a list of them (not its characters)
            options["stop"] = check_texts(
                [options["stop"]] if isinstance(options["stop"], str) else options["stop"], "stop"
            )
        max_tokens = options["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
            raise XclientValueError(f"max_tokens: expected a positive int, got {max_tokens!r}")
        return options

    def _call(
        self,
        prompt: str,
        stop: Sequence[str] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool,
        template_stop: Sequence[str] = (),
        turns: Sequence[tuple[str, str]] | None = None,
    ) -> Call:
        check_text(prompt, "prompt")
        options = self._options(stop, kwargs)
        check_session_len(prompt, self.session_len, self.tokenizer, options["model"])
        meta = self._meta()
        stops = [*(options["stop"] or ()), *template_stop, *(meta.stop if meta else ())]
        sampling = Sampling(
            max_tokens=options["max_tokens"],
            settings=sampling_settings(options),
            stop=tuple(dict.fromkeys(s for s in stops if s)),
            extra=dict(options["model_kwargs"] or {}),
        )
        chat = tuple(turns) if turns is not None else None
        return Call(model=options["model"], prompt=prompt, sampling=sampling, stream=stream, turns=chat)

    def _chunks(self, call: Call, run_manager: Any, make: Callable[[str | Ending], Chunk]) -> Iterator[Chunk]:
        """A streaming call's LangChain chunks (``make`` builds one), each reported to the callbacks."""
        for item in run(self._engine(), call):
            chunk = make(item)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _achunks(
        self, call: Call, run_manager: Any, make: Callable[[str | Ending], Chunk]
    ) -> AsyncIterator[Chunk]:
        """:meth:`_chunks` on the running event loop."""
        async for item in arun(self._engine(), call):
            chunk = make(item)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """What makes two instances answer alike (LangChain's caching and tracing)."""
        params: dict[str, Any] = {
            "model_name": self.model_name,
            "server_url": self.server_url,
            "max_tokens": self.max_tokens,
        }
        params.update(sampling_settings({name: getattr(self, name) for name in SAMPLING_FIELDS}))
        if self.stop:
            params["stop"] = self.stop
        if self.model_kwargs:
            params["model_kwargs"] = self.model_kwargs
        return params

    def _ls_params(self, stop: list[str] | None, kwargs: dict[str, Any], model_type: str) -> dict[str, Any]:
        """LangSmith's standard parameters, a call's options first (never raises: tracing only)."""
        named = {CALL_ALIASES.get(key, key): value for key, value in kwargs.items()}
        model = named.get("model", self.model_name)
        params: dict[str, Any] = {
            "ls_provider": "xclient",
            "ls_model_name": model if isinstance(model, str) else self.model_name,
            "ls_model_type": model_type,
            "ls_max_tokens": named.get("max_tokens", self.max_tokens),
        }
        temperature = named.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        stops = stop if stop is not None else named.get("stop", self.stop)
        if stops:
            params["ls_stop"] = [stops] if isinstance(stops, str) else list(stops)
        return params
