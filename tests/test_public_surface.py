"""The typed public surface: explicit constructor keywords, the exported names, a literal __all__."""

from __future__ import annotations

import ast
import inspect
import pathlib
import subprocess
import sys

import pytest

import Xclient
import Xclient.client
from Xclient.client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    AsyncioServerClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
    ModelClientOptions,
    ServerClient,
    ServerClientOptions,
)

MODEL_CLIENTS = [ModelClient, AsyncioModelClient, FuturesModelClient, DecoupledModelClient, AsyncioDecoupledModelClient]
SERVER_CLIENTS = [ServerClient, AsyncioServerClient]
SRC = pathlib.Path(Xclient.__file__).parent


@pytest.mark.parametrize("cls", MODEL_CLIENTS + SERVER_CLIENTS, ids=lambda c: c.__name__)
def test_a_misspelled_keyword_is_a_type_error_at_once(cls):
    args = ("grpc://localhost:8001", "text") if cls in MODEL_CLIENTS else ("grpc://localhost:8001",)
    with pytest.raises(TypeError, match="inference_timout_s"):
        cls(*args, inference_timout_s=5)


@pytest.mark.parametrize("cls", MODEL_CLIENTS + SERVER_CLIENTS, ids=lambda c: c.__name__)
def test_constructors_take_typed_keywords_not_any(cls):
    (options,) = [p for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.VAR_KEYWORD]
    expected = "ModelClientOptions" if cls in MODEL_CLIENTS else "ServerClientOptions"
    assert options.annotation == f"Unpack[{expected}]"


def test_every_option_of_the_typed_dicts_is_a_real_keyword():
    """The TypedDicts name exactly what the constructors accept (each one constructs, with no I/O)."""
    values = {
        "api_key": "sk-x",
        "api_key_header": "x-api-key",
        "headers": {"x-trace": "一"},
        "ca_certs": None,
        "client_cert": None,
        "client_key": None,
        "retries": 1,
        "retry_backoff_s": 0.2,
        "retry_unsafe": True,
        "dns_refresh_s": 5.0,
        "init_timeout_s": 3.0,
        "lazy_init": True,
        "inference_timeout_s": 4.0,
        "model_config": None,
        "ensure_model_is_ready": True,
        "wait_for_server_on_first_call": True,
        "timeout_s": 3.0,
        "load_timeout_s": 9.0,
    }
    model_options = {k: values[k] for k in ModelClientOptions.__annotations__}
    server_options = {k: values[k] for k in ServerClientOptions.__annotations__}
    for cls in MODEL_CLIENTS:
        cls("grpc://localhost:8001", "text", **model_options)
    for cls in SERVER_CLIENTS:
        cls("grpc://localhost:8001", **server_options)


def test_every_client_and_stream_is_exported_from_the_top_level_lazily():
    from Xclient.client._decoupled import AsyncResponseStream, ResponseStream

    for name in Xclient.client.__all__:
        assert getattr(Xclient.client, name) is not None, name
    assert Xclient.ResponseStream is ResponseStream and Xclient.AsyncResponseStream is AsyncResponseStream
    for cls in [*MODEL_CLIENTS, *SERVER_CLIENTS]:
        assert getattr(Xclient, cls.__name__) is cls and cls.__name__ in Xclient.__all__
    code = "import sys, Xclient; print('Xclient.client' in sys.modules, 'Xclient.client._decoupled' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # nothing is imported before it is used


@pytest.mark.parametrize("path", ["__init__.py", "client/__init__.py"])
def test_all_is_a_literal_list_of_names_that_exist(path):
    tree = ast.parse((SRC / path).read_text())
    assigns = [n for n in tree.body if isinstance(n, ast.Assign)]
    (node,) = [n for n in assigns if any(getattr(t, "id", "") == "__all__" for t in n.targets)]
    assert isinstance(node.value, ast.List) and all(isinstance(e, ast.Constant) for e in node.value.elts)
    module = Xclient if path == "__init__.py" else Xclient.client
    for name in module.__all__:
        assert hasattr(module, name), name


def test_the_client_package_exports_every_error():
    assert set(Xclient.exceptions.__all__) <= set(Xclient.client.__all__)
