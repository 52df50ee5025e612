"""The connection fields every LangChain class shares (ChatMetaLM, MetaLM, MetaLMEmbeddings,
MetaLMRerank), defined once, with langchain-openai's names and env-var defaults.

====================  ==========================  =============================================
field                 also accepted as            meaning
====================  ==========================  =============================================
``base_url``          ``server_url``              a URL, or a list of URLs (replicas); env ``XCLIENT_URL``
                                                  (comma-separated), default ``localhost:8001``
``model``             ``model_name``              the model's name on the server
``model_version``                                 ``"2"`` or ``2``; None: the server's choice
``timeout``           ``inference_timeout_s``     seconds per request (per response when streaming)
``init_timeout_s``                                seconds for the readiness and config calls
``max_retries``                                   resends of a request that never reached the server
``api_key``                                       a ``SecretStr``; env ``XCLIENT_API_KEY``
``api_key_header``, ``headers``                   as for the clients
====================  ==========================  =============================================

A URL with no scheme follows the rule of every Xclient class (:mod:`Xclient.client._urls`): port
8001 is gRPC, any other port (or none) HTTP.

**Several replicas.** ``base_url=["grpc://a:8001", "grpc://b:8001"]`` spreads the calls over the
replicas, all of one protocol (the clients' replica set balances, takes out a replica that is down
and fails over). In Python a URL is one string: a comma in it is an error, not a separator (a list
says what is meant); only ``XCLIENT_URL``, one environment variable, is comma-separated
(``XCLIENT_URL=grpc://a:8001,grpc://b:8001``); the rule is :mod:`Xclient._replica_urls`'s.
``base_url`` reads back as given (a str, or a list); :attr:`ConnectionFields.urls` is always the
tuple of every URL.

The old names read back too (``llm.model_name``, ``llm.server_url``,
``embeddings.inference_timeout_s``). :meth:`ConnectionFields.client_options` is the one place where
these become the base clients' keywords (and :attr:`ConnectionFields.client_url` their URL argument).
"""

from __future__ import annotations

import os
from typing import Any

try:
    from langchain_core.utils import secret_from_env
    from pydantic import (
        AliasChoices,
        BaseModel,
        ConfigDict,
        Field,
        SecretStr,
        ValidationInfo,
        field_validator,
    )
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "Xclient's LangChain classes need the 'langchain' extra: pip install 'llmops-xclient[langchain]'"
    ) from None

from ._replica_urls import ENV_URL, check_urls, client_target, split_urls, url_tuple

ENV_API_KEY = "XCLIENT_API_KEY"
DEFAULT_URL = "localhost:8001"
#: ``model``'s aliases, for a subclass that gives it a default.
MODEL_ALIASES = AliasChoices("model", "model_name")
#: A URL field's value: one URL, or one per replica.
Urls = str | list[str]


def urls_from_env() -> Urls:
    """``XCLIENT_URL``'s URLs (comma-separated: ``a:8001,b:8001``), else ``localhost:8001``: a str for
    one URL, a list for several."""
    urls = split_urls(os.environ.get(ENV_URL, ""))
    if not urls:
        return DEFAULT_URL
    return urls[0] if len(urls) == 1 else urls


class ConnectionFields(BaseModel):
    """Where the model is and how to reach it: the fields of every Xclient LangChain class."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    model: str = Field(validation_alias=MODEL_ALIASES)
    """The model's name on the Triton server (also accepted as ``model_name``)."""
    base_url: Urls = Field(default_factory=urls_from_env, validation_alias=AliasChoices("base_url", "server_url"))
    """``host:port`` (port 8001: gRPC; any other: HTTP), ``grpc(s)://host:port`` or ``http(s)://host:port``,
    or a list of them, one per replica, all of one protocol (also accepted as ``server_url``); env
    ``XCLIENT_URL`` (comma-separated for several), default ``localhost:8001``."""
    model_version: str | None = None
    """The model version (``"2"`` or ``2``); None: the server's choice."""
    timeout: float = Field(default=60.0, gt=0, validation_alias=AliasChoices("timeout", "inference_timeout_s"))
    """Seconds to wait for each request (each response of a stream); also ``inference_timeout_s``."""
    init_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for the readiness and config calls on first use."""
    max_retries: int = Field(default=0, ge=0)
    """Resends of a request that never reached the server (connection refused, DNS), by the one retry
    policy (:mod:`Xclient.client._retry`: about 0.5 s, 1 s, 2 s... apart, at most 8 s); never once a
    response came. 0 (default): none."""
    api_key: SecretStr | None = Field(default_factory=secret_from_env(ENV_API_KEY, default=None))
    """Sent as ``Authorization: Bearer <key>`` (see ``api_key_header``); env ``XCLIENT_API_KEY``. Never shown."""
    api_key_header: str = "Authorization"
    """The header that carries the key; another name than Authorization carries the bare key."""
    headers: dict[str, str] | None = Field(default=None, repr=False)
    """Headers sent with every request."""

    @field_validator("base_url")
    @classmethod
    def _valid_urls(cls, value: Urls, info: ValidationInfo) -> Urls:
        check_urls(info.field_name or "base_url", value)  # no network: only the syntax
        return value.strip() if isinstance(value, str) else [url.strip() for url in value]

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return None if value == "" else value

    # -- the old names, read back ------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """``model``, by its ChatMetaLM name."""
        return self.model

    @property
    def server_url(self) -> Urls:
        """``base_url``, by its ChatMetaLM name."""
        return self.base_url

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL of ``base_url`` (one per replica), as a tuple."""
        return url_tuple(self.base_url)

    @property
    def client_url(self) -> str | tuple[str, ...]:
        """``base_url`` as the base clients take it: the URL, or the tuple of the replicas' URLs."""
        return client_target(self.base_url)

    @property
    def inference_timeout_s(self) -> float:
        """``timeout``, by the clients' name."""
        return self.timeout

    # -- to the clients ----------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """The base clients' keywords for these fields (``ModelClient(client_url, model, **options)``)."""
        return {
            "model_version": self.model_version,
            "init_timeout_s": self.init_timeout_s,
            "inference_timeout_s": self.timeout,
            "api_key": self.api_key.get_secret_value() if self.api_key else None,
            "api_key_header": self.api_key_header,
            "headers": self.headers,
            "retries": self.max_retries,
        }
