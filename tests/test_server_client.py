"""Model management (ServerClient, AsyncioServerClient) against the real local server."""

from __future__ import annotations

import pytest

from Xclient.client import AsyncioServerClient, ModelClient, ServerClient
from Xclient.exceptions import ClientClosedError, ModelUnavailableError, ServerUnavailableError, XclientValueError


def test_health_metadata_and_model_list(url):
    with ServerClient(url) as server:
        assert server.is_live() and server.is_ready()
        assert server.metadata()["name"] == "triton"
        models = {(m.name, m.version): m for m in server.models()}
        assert models[("text", "1")].ready
        assert models[("versioned", "1")].ready and models[("versioned", "2")].ready
        assert server.is_model_ready("text") and not server.is_model_ready("no_such_model")
        config = server.model_config("versioned", 2)
        assert config.name == "versioned" and config.version == "2"


def test_unload_then_load_with_a_config_override(triton_server, protocol):
    url = triton_server.url(protocol)
    with ServerClient(url) as server, ModelClient(url, "optional") as client:
        assert client.infer_sample([1.0])["sum"].tolist() == [1.0]
        original = dict(server.model_config("optional").raw)
        server.unload_model("optional")
        assert not server.is_model_ready("optional")
        state = {m.name: m.state for m in server.models()}["optional"]
        assert state in ("UNAVAILABLE", "UNLOADING")
        with pytest.raises(ModelUnavailableError):
            ModelClient(url, "optional").infer_sample([1.0])
        with pytest.raises(ModelUnavailableError, match="'optional'"):
            server.model_config("optional")
        server.load_model("optional", {**original, "max_batch_size": 4})
        assert server.model_config("optional").max_batch_size == 4
        with ModelClient(url, "optional") as fresh, pytest.raises(XclientValueError, match="max_batch_size 4"):
            fresh.infer_batch(a=[[1.0]] * 5)
        server.load_model("optional", original)  # Triton keeps an override until told otherwise
        assert server.model_config("optional").max_batch_size == 8
        assert ModelClient(url, "optional").infer_sample([2.0])["sum"].tolist() == [2.0]


def test_statistics_count_inferences(url):
    with ModelClient(url, "text") as client:
        client.infer_sample("统计")
    with ServerClient(url) as server:
        stats = server.statistics("text")
        assert stats and stats[0]["name"] == "text"
        assert int(stats[0]["inference_count"]) >= 1
        assert {s["name"] for s in server.statistics()} >= {"text", "identity"}


def test_errors_are_typed(url, dead_url):
    with ServerClient(url) as server:
        with pytest.raises(XclientValueError, match="model name"):
            server.load_model("")
        with pytest.raises(XclientValueError, match="expected a dict"):
            server.load_model("text", config=3)  # type: ignore[arg-type]
        with pytest.raises(ModelUnavailableError):
            server.model_config("no_such_model")
    server.close()
    with pytest.raises(ClientClosedError):
        server.models()
    with pytest.raises(ServerUnavailableError):
        ServerClient(dead_url).models()


async def test_asyncio_server_client_is_the_same(url):
    async with AsyncioServerClient(url) as server:
        assert await server.is_ready()
        names = {m.name for m in await server.models()}
        assert {"text", "identity", "stream"} <= names
        assert (await server.model_config("text")).max_batch_size == 8
        await server.wait_for_server(5)
        assert (await server.metadata())["name"] == "triton"
