"""API keys and headers, proved against a Triton server that enforces a key (its restricted-API settings)."""

from __future__ import annotations

import logging
import traceback

import pytest

from Xclient.client import ModelClient
from Xclient.client._auth import build_headers, redact
from Xclient.exceptions import AccessDeniedError, XclientError
from Xclient.server import DEMO_MODELS, LocalTritonServer

from .conftest import MODELS
from .drivers import STREAMING, Driver, every_client

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def secured_server():
    # Triton itself enforces the key (its restricted-API settings), on both protocols.
    models = ["text", "text_stream"]
    with LocalTritonServer(model_repository=[MODELS, DEMO_MODELS], models=models, api_key=KEY) as server:
        assert KEY not in repr(server)
        yield server


@pytest.fixture
def secured_url(secured_server, protocol):
    return secured_server.url(protocol)


def test_api_key_is_sent_as_bearer_token_and_accepted(secured_url):
    with ModelClient(secured_url, "text", api_key=KEY) as client:
        assert client.infer_sample("钥匙")["LENGTH"].tolist() == [2]


def test_missing_or_wrong_key_is_refused_by_the_server(secured_url):
    for api_key in (None, "sk-wrong-key-0000"):
        with ModelClient(secured_url, "text", api_key=api_key) as client, pytest.raises(XclientError) as info:
            client.infer_sample("x")
        assert isinstance(info.value, AccessDeniedError)
        assert "authorization" in info.value.server_message.lower()


def test_per_client_headers_and_per_call_headers_carry_the_key(secured_url):
    # Triton checks the gRPC key in the metadata 'triton-grpc-protocol-authorization'
    name = "triton-grpc-protocol-authorization" if secured_url.startswith("grpc") else "Authorization"
    with ModelClient(secured_url, "text", headers={name: f"Bearer {KEY}"}) as client:
        assert client.infer_sample("a")["LENGTH"].tolist() == [1]
    config = ModelClient(secured_url, "text", api_key=KEY).model_config
    with ModelClient(secured_url, "text", model_config=config, ensure_model_is_ready=False) as client:
        out = client.infer_sample("ab", headers={name: f"Bearer {KEY}"})
        assert out["LENGTH"].tolist() == [2]


def test_the_key_never_shows_in_repr_errors_or_logs(secured_url, caplog):
    caplog.set_level(logging.DEBUG)
    client = ModelClient(secured_url, "no_such_model", api_key=KEY, headers={"x-trace": "1"})
    assert KEY not in repr(client)
    with pytest.raises(XclientError) as info:
        client.infer_sample("x")
    for text in (str(info.value), repr(info.value), info.value.server_message or "", caplog.text):
        assert KEY not in text


def test_api_key_header_name_is_configurable():
    assert build_headers("k-123", "Authorization", None) == {"Authorization": "Bearer k-123"}
    assert build_headers("k-123", "x-api-key", {"X-API-KEY": "old"}) == {"x-api-key": "k-123"}
    assert build_headers("k-123", "Authorization", None, grpc=True) == {
        "Authorization": "Bearer k-123",
        "triton-grpc-protocol-authorization": "Bearer k-123",
    }
    assert redact("token Bearer k-123456 here", ["k-123456"]) == "token Bearer *** here"


def test_model_management_needs_the_key_too(secured_url):
    from Xclient.client import ServerClient

    with ServerClient(secured_url, api_key=KEY) as server:
        assert "text" in {m.name for m in server.models()}
        assert server.is_ready()  # health stays open: readiness probes need no key
    with ServerClient(secured_url) as server, pytest.raises(AccessDeniedError):
        server.models()


@every_client
def test_no_client_shows_its_key_in_repr_errors_tracebacks_or_logs(secured_server, kind, protocol, caplog):
    caplog.set_level(logging.DEBUG)
    url = secured_server.url(protocol)
    model = "text_stream" if kind in STREAMING else "text"
    wrong = "sk-wrong-key-9876543210"  # a key the server refuses is a secret too
    shown: list[str] = []
    keyed = Driver(kind, url, model, api_key=KEY, headers={"x-trace": "1"})
    shown.append(repr(keyed.client))
    assert keyed.infer("钥匙")  # the key works
    for driver in (Driver(kind, url, "no_such_model", api_key=KEY), Driver(kind, url, model, api_key=wrong)):
        shown.append(repr(driver.client))
        with pytest.raises(XclientError) as info:
            driver.infer("钥匙")
        error = info.value
        shown += [str(error), repr(error), error.server_message or "", "".join(traceback.format_exception(error))]
        driver.close()
    keyed.close()
    shown.append(caplog.text)
    assert isinstance(error, AccessDeniedError)  # the wrong key was sent, and refused
    for text in shown:
        assert KEY not in text and wrong not in text and "0123456789abcdef" not in text


def test_server_client_does_not_show_its_key_in_repr_or_errors(secured_url):
    from Xclient.client import ServerClient

    with ServerClient(secured_url, api_key=KEY) as server:
        assert KEY not in repr(server)
        with pytest.raises(XclientError) as info:
            server.model_config("no_such_model")
    assert KEY not in "".join(traceback.format_exception(info.value))
