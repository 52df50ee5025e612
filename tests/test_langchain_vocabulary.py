"""The four LangChain classes share one vocabulary (base_url/server_url, model/model_name, model_version,
timeout, max_retries, api_key) and one URL rule, against the real local server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from Xclient import ChatMetaLM, MetaLM, MetaLMEmbeddings, MetaLMRerank
from Xclient.client import RetryPolicy
from Xclient.exceptions import ServerUnavailableError

CLASSES: dict[str, tuple[type[Any], str]] = {
    "ChatMetaLM": (ChatMetaLM, "Qwen2-0.5B-Instruct"),
    "MetaLM": (MetaLM, "Qwen2-0.5B-Instruct"),
    "MetaLMEmbeddings": (MetaLMEmbeddings, "bge-m3-v"),
    "MetaLMRerank": (MetaLMRerank, "bge-reranker-v2-m3"),
}


@pytest.fixture(params=list(CLASSES))
def kind(request: pytest.FixtureRequest) -> tuple[type[Any], str]:
    return CLASSES[request.param]


def use(instance: Any) -> Any:
    """One real call of the instance's kind, with Chinese text."""
    if isinstance(instance, MetaLMEmbeddings):
        return instance.embed_query("什么是向量检索")
    if isinstance(instance, MetaLMRerank):
        return instance.rerank("什么是向量检索", ["向量检索把文本变成向量。", "今天天气很好。"])
    if isinstance(instance, ChatMetaLM):
        return instance.invoke("你好").content
    return instance.invoke("你好")


def protocol_of(instance: Any) -> str:
    """The protocol the instance's clients use (made without network I/O)."""
    if isinstance(instance, (ChatMetaLM, MetaLM)):
        return instance._engine().settings.url.protocol
    client, _ = instance._sync_client()
    return client.url.split("://")[0]


def test_new_and_old_field_names_are_one_field(kind):
    cls, model = kind
    new = cls(base_url="grpc://box:8001", model=model, model_version=2, timeout=5, max_retries=1, api_key="sk-一")
    old = cls(server_url="grpc://box:8001", model_name=model, model_version="2", inference_timeout_s=5, max_retries=1)
    for instance in (new, old):
        assert (instance.base_url, instance.server_url) == ("grpc://box:8001", "grpc://box:8001")
        assert (instance.model, instance.model_name) == (model, model)
        assert instance.model_version == "2"  # one representation: a str, or None
        assert (instance.timeout, instance.inference_timeout_s, instance.max_retries) == (5.0, 5.0, 1)
    assert isinstance(new.api_key, SecretStr) and "sk-一" not in repr(new)
    with pytest.raises(ValidationError):
        cls(base_url="grpc://box:8001", model=model, timeuot=5)  # a typo is an error at once


def test_the_environment_gives_base_url_and_api_key(kind, monkeypatch):
    cls, model = kind
    monkeypatch.setenv("XCLIENT_URL", "box:8001")
    monkeypatch.setenv("XCLIENT_API_KEY", "sk-from-env")
    instance = cls(model=model)
    assert instance.base_url == "box:8001" and instance.api_key.get_secret_value() == "sk-from-env"
    assert protocol_of(instance) == "grpc"
    monkeypatch.delenv("XCLIENT_URL")
    assert cls(model=model).base_url == "localhost:8001"  # one default for every class


@pytest.mark.parametrize(("base_url", "protocol"), [("box:8001", "grpc"), ("box:8000", "http"), ("box", "http")])
def test_a_url_without_scheme_means_the_same_in_every_class(kind, base_url, protocol):
    cls, model = kind
    assert protocol_of(cls(base_url=base_url, model=model)) == protocol


def test_an_unknown_scheme_is_refused_by_every_class(kind):
    cls, model = kind
    with pytest.raises(ValidationError, match="unknown scheme 'ftp'"):
        cls(base_url="ftp://box:1", model=model)


def test_every_class_works_with_a_url_with_and_without_scheme(kind, triton_server):
    cls, model = kind
    no_scheme = triton_server.http_url.removeprefix("http://")  # not port 8001: HTTP
    for base_url in (no_scheme, triton_server.grpc_url, triton_server.http_url):
        instance = cls(base_url=base_url, model=model)
        assert use(instance)
        instance.close()


def test_max_retries_resends_a_refused_request_by_the_one_policy(kind, dead_url, monkeypatch):
    cls, model = kind
    pauses: list[float] = []
    real = RetryPolicy.backoff

    def recorded(self: RetryPolicy, attempt: int, random_: Any = None) -> float:
        pauses.append(real(self, attempt))
        return 0.001  # the rule is pinned in test_retry.py; keep this test quick

    monkeypatch.setattr(RetryPolicy, "backoff", recorded)
    with pytest.raises(ServerUnavailableError):
        use(cls(base_url=dead_url, model=model))
    assert pauses == []  # off by default
    with pytest.raises(ServerUnavailableError):
        use(cls(base_url=dead_url, model=model, max_retries=2))
    assert len(pauses) == 2 and 0.375 <= pauses[0] <= 0.5 and 0.75 <= pauses[1] <= 1.0
