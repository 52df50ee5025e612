"""A standard model repository (TorchScript ``model.pt``, ONNX ``model.onnx``) served on CPU with an API key.

The models are built here: a small CNN saved as TorchScript and exported to ONNX, laid out as users do
(``model-repo/mnist-cnn/1/model.pt``). One server of this module's own serves them (not the session's).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import signal
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from Xclient.cli import main
from Xclient.client import ModelClient, ServerClient
from Xclient.exceptions import AccessDeniedError
from Xclient.server import LocalTritonServer
from Xclient.server._repository import plan

from .test_cli import popen_module

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

KEY = "sk-repo-0123456789abcdef"
CLI_KEY = "sk-serve-fedcba9876543210"


def _cnn(seed: int) -> Any:
    """A small MNIST-style CNN on 1x32x32 images, with its weights from ``seed``."""
    torch.manual_seed(seed)

    class Cnn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4 * 15 * 15, 10)

        def forward(self, model_input: Any) -> Any:
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv(model_input)), 2)
            return self.fc(x.flatten(1))

    return Cnn().eval()


def _save(net: Any, version_dir: pathlib.Path, kind: str, names: tuple[str, str]) -> None:
    version_dir.mkdir(parents=True)
    example = torch.zeros(1, 1, 32, 32)
    if kind == "torchscript":
        torch.jit.trace(net, example).save(str(version_dir / "model.pt"))
    else:
        torch.onnx.export(
            net,
            (example,),
            str(version_dir / "model.onnx"),
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
            dynamo=False,
        )


def _config(lines: str, input_name: str, output_name: str) -> str:
    return (
        f"{lines}\n"
        f'input [{{ name: "{input_name}", data_type: TYPE_FP32, dims: [1, 32, 32] }}]\n'
        f'output [{{ name: "{output_name}", data_type: TYPE_FP32, dims: [10] }}]\n'
    )


@pytest.fixture(scope="module")
def nets() -> dict[str, Any]:
    return {"a": _cnn(0), "b": _cnn(1)}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, nets: dict[str, Any]) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("model-repo")
    # The users' layout: a TorchScript CNN, its inputs declared with -1 as the batch axis (max_batch_size).
    _save(nets["a"], repo / "mnist-cnn" / "1", "torchscript", ("model_input", "logits"))
    (repo / "mnist-cnn" / "config.pbtxt").write_text(
        _config('platform: "pytorch_libtorch"\nmax_batch_size: 8\ndynamic_batching { }', "model_input", "logits")
    )
    # Its ONNX twin with no config.pbtxt at all: completed from the graph.
    _save(nets["a"], repo / "mnist-cnn-onnx" / "1", "onnx", ("model_input", "logits"))
    # Two versions, each with the runner that fits its file; Triton's INPUT__0 / OUTPUT__0 names.
    _save(nets["a"], repo / "mnist-cnn-versions" / "1", "torchscript", ("INPUT__0", "OUTPUT__0"))
    _save(nets["b"], repo / "mnist-cnn-versions" / "2", "onnx", ("INPUT__0", "OUTPUT__0"))
    (repo / "mnist-cnn-versions" / "config.pbtxt").write_text(
        _config('backend: "pytorch"\nmax_batch_size: 4\nversion_policy { all { } }', "INPUT__0", "OUTPUT__0")
    )
    # Dynamic batching held by Triton until 4 requests are queued: one execution of batch 4.
    _save(nets["a"], repo / "mnist-cnn-batched" / "1", "torchscript", ("model_input", "logits"))
    batching = "dynamic_batching { preferred_batch_size: [4] max_queue_delay_microseconds: 30000000 }"
    (repo / "mnist-cnn-batched" / "config.pbtxt").write_text(
        _config(f'backend: "pytorch"\nmax_batch_size: 4\n{batching}', "model_input", "logits")
    )
    # A TensorRT plan: refused, and the others still start.
    (repo / "resnet-trt" / "1").mkdir(parents=True)
    (repo / "resnet-trt" / "1" / "model.plan").write_bytes(b"\0not a plan")
    (repo / "resnet-trt" / "config.pbtxt").write_text('platform: "tensorrt_plan"\nmax_batch_size: 8\n')
    return repo


@pytest.fixture(scope="module")
def server(repository: pathlib.Path) -> Iterator[LocalTritonServer]:
    with LocalTritonServer(repository, api_key=KEY) as server:
        yield server


@pytest.fixture
def repo_url(server: LocalTritonServer, protocol: str) -> str:
    return server.url(protocol)


def _images(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 1, 32, 32)).astype(np.float32)


def _expected(net: Any, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(images)).numpy()


def _post(url: str, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # our loopback server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _curl_body(images: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "model_input", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}
        ]
    }


def test_curl_style_json_request_with_the_key_returns_the_models_numbers(server, nets) -> None:
    images = _images(1)
    status, answer = _post(f"{server.http_url}/v2/models/mnist-cnn/infer", _curl_body(images), KEY)
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("logits", "FP32", [1, 10])
    np.testing.assert_allclose(
        np.array(output["data"]).reshape(1, 10), _expected(nets["a"], images), rtol=1e-5, atol=1e-5
    )


def test_the_same_request_without_the_key_or_with_a_wrong_one_is_refused(server) -> None:
    url = f"{server.http_url}/v2/models/mnist-cnn/infer"
    for key in (None, "sk-wrong"):
        status, answer = _post(url, _curl_body(_images(1)), key)
        assert status == 403, (status, answer)
        assert "authorization" in answer.get("error", "").lower()
    status, _ = _post(url.replace("/infer", "/load").replace("/models/", "/repository/models/"), {}, None)
    assert status in (401, 403)  # management calls too


def test_model_client_infer_batch_returns_the_models_numbers(repo_url, nets) -> None:
    images = _images(3)
    with ModelClient(repo_url, "mnist-cnn", api_key=KEY) as client:
        out = client.infer_batch(model_input=images)
    assert out["logits"].shape == (3, 10)
    np.testing.assert_allclose(out["logits"], _expected(nets["a"], images), rtol=1e-5, atol=1e-5)


def test_model_client_without_the_key_gets_access_denied(repo_url) -> None:
    with ModelClient(repo_url, "mnist-cnn") as client, pytest.raises(AccessDeniedError) as info:
        client.infer_batch(model_input=_images(1))
    # Triton 2.51's own answers: HTTP 403; gRPC UNAVAILABLE (not UNAUTHENTICATED) with "is restricted".
    assert info.value.status in ("403", "StatusCode.UNAVAILABLE")
    assert "restricted, expecting header" in (info.value.server_message or "")


def test_onnx_model_without_config_is_completed_from_its_graph(server, repo_url, nets, capsys) -> None:
    with ServerClient(repo_url, api_key=KEY) as client:
        config = client.model_config("mnist-cnn-onnx")
    assert config.max_batch_size == 4 and "dynamic_batching" in config.raw
    assert [(s.name, s.triton_dtype, list(s.shape)) for s in config.inputs] == [("model_input", "FP32", [1, 32, 32])]
    assert [(s.name, s.triton_dtype, list(s.shape)) for s in config.outputs] == [("logits", "FP32", [10])]
    assert main(["models", "config", "mnist-cnn-onnx", "--url", repo_url, "--api-key", KEY, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["backend"] == "python" and shown["max_batch_size"] == 4
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in shown["input"]] == [
        ("model_input", "TYPE_FP32", [1, 32, 32])
    ]
    images = _images(2, seed=3)
    with ModelClient(repo_url, "mnist-cnn-onnx", api_key=KEY) as client:
        out = client.infer_batch(model_input=images)
    np.testing.assert_allclose(out["logits"], _expected(nets["a"], images), rtol=1e-4, atol=1e-4)


def test_a_refused_backend_gets_its_one_line_message_and_the_others_start(server) -> None:
    (line,) = server.refused
    assert line.startswith("cannot serve: resnet-trt (platform tensorrt_plan): ") and "\n" not in line
    assert "TorchScript" in line and "ONNX" in line
    with ServerClient(server.http_url, api_key=KEY) as client:
        ready = {m.name for m in client.models() if m.ready}
    assert {"mnist-cnn", "mnist-cnn-onnx", "mnist-cnn-versions", "mnist-cnn-batched"} <= ready
    assert "resnet-trt" not in ready


def test_two_versions_are_each_served_by_the_runner_that_fits_their_file(repo_url, nets) -> None:
    images = _images(2, seed=5)
    for version, net in (("1", nets["a"]), ("2", nets["b"])):  # 1/model.pt (TorchScript), 2/model.onnx
        with ModelClient(repo_url, "mnist-cnn-versions", model_version=version, api_key=KEY) as client:
            out = client.infer_batch(INPUT__0=images)
        np.testing.assert_allclose(out["OUTPUT__0"], _expected(net, images), rtol=1e-4, atol=1e-4)


def test_dynamic_batching_from_the_config_is_done_by_triton(server, nets) -> None:
    images = _images(4, seed=11)
    results: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        with ModelClient(server.grpc_url, "mnist-cnn-batched", api_key=KEY) as client:
            results[i] = client.infer_batch(model_input=images[i : i + 1])["logits"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [0, 1, 2, 3]
    np.testing.assert_allclose(np.concatenate([results[i] for i in range(4)]), _expected(nets["a"], images), atol=1e-5)
    with ServerClient(server.http_url, api_key=KEY) as client:
        (stats,) = client.statistics("mnist-cnn-batched")
    # Triton queued the four requests until its preferred batch of 4: one execution ran them together.
    assert stats["inference_count"] == 4 and stats["execution_count"] == 1
    assert [int(b["batch_size"]) for b in stats["batch_stats"]] == [4]


def test_health_works_without_the_key_on_a_key_protected_server(server, capsys) -> None:
    assert main(["health", "--url", server.http_url, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["live"] and answer["ready"] and answer["metadata"] is None
    assert main(["health", "--url", server.grpc_url, "--api-key", KEY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["name"] == "triton"


def test_the_workspace_and_log_are_private_and_the_log_has_no_key(server) -> None:
    log = server.log_path
    assert log is not None and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    generated = log.parent / "models" / "mnist-cnn"
    assert stat.S_IMODE((generated / "config.pbtxt").stat().st_mode) == 0o600
    assert 'backend: "python"' in (generated / "config.pbtxt").read_text()
    assert KEY not in server.logs()


def test_plan_refuses_a_torchscript_file_without_config_and_names_what_it_needs(tmp_path) -> None:
    (tmp_path / "mnist-cnn" / "1").mkdir(parents=True)
    (tmp_path / "mnist-cnn" / "1" / "model.pt").write_bytes(b"")
    (tmp_path / "ov" / "1").mkdir(parents=True)
    (tmp_path / "ov" / "config.pbtxt").write_text('backend: "openvino"\n')
    result = plan([tmp_path], None)
    assert result.models == ()
    assert result.refused[0].startswith("cannot serve: mnist-cnn (model.pt, no platform): ")
    assert "config.pbtxt" in result.refused[0]
    assert result.refused[1].startswith("cannot serve: ov (backend openvino): ")


def test_xclient_serve_runs_the_repository_with_a_key_until_sigint(tmp_path, nets) -> None:
    repo = tmp_path / "model-repo"
    _save(nets["a"], repo / "mnist-cnn" / "1", "onnx", ("model_input", "logits"))
    (repo / "detector-tf" / "1" / "model.savedmodel").mkdir(parents=True)  # refused, one line; mnist-cnn starts
    (repo / "detector-tf" / "config.pbtxt").write_text('platform: "tensorflow_savedmodel"\n')
    argv = ["serve", "--model-repository", str(repo), "--api-key", CLI_KEY, "--http-port", "0", "--grpc-port", "0"]
    process = popen_module(*argv, encoding="utf-8")
    assert process.stdout is not None
    try:
        banner: list[str] = []
        for line in process.stdout:  # the banner ends with the Ctrl-C hint
            banner.append(line)
            if "Ctrl-C" in line:
                break
        else:
            pytest.fail(f"serve exited: {process.stderr.read() if process.stderr else ''}")
        rows = {line.split()[0]: line.split()[-1] for line in banner if line.startswith("  ")}
        assert rows["HTTP"].startswith("http://127.0.0.1:") and rows["gRPC"].startswith("grpc://127.0.0.1:")
        assert pathlib.Path(rows["log"]).name == "tritonserver.log" and pathlib.Path(rows["log"]).exists()
        status, answer = _post(f"{rows['HTTP']}/v2/models/mnist-cnn/infer", _curl_body(_images(1)), CLI_KEY)
        assert status == 200 and answer["outputs"][0]["shape"] == [1, 10]
        assert _post(f"{rows['HTTP']}/v2/models/mnist-cnn/infer", _curl_body(_images(1)), None)[0] in (401, 403)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert CLI_KEY not in "".join(banner) + out + err
    assert "error: cannot serve: detector-tf (platform tensorflow_savedmodel): " in err
    assert "serves: mnist-cnn\n" in "".join(banner)
    assert not pathlib.Path(rows["log"]).exists()  # the workspace is removed on stop


def test_plan_names_the_extra_to_install_when_a_runner_package_is_missing(tmp_path, monkeypatch) -> None:
    (tmp_path / "mnist-cnn" / "1").mkdir(parents=True)
    (tmp_path / "mnist-cnn" / "1" / "model.pt").write_bytes(b"")
    (tmp_path / "mnist-cnn" / "config.pbtxt").write_text(_config('platform: "pytorch_libtorch"', "x", "y"))
    (tmp_path / "图像-onnx" / "1").mkdir(parents=True)
    (tmp_path / "图像-onnx" / "1" / "model.onnx").write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(  # the environment without the extras: a fault this machine cannot have on demand
        importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "onnxruntime") else real(name, *a)
    )
    result = plan([tmp_path], None)
    assert result.refused == (
        "cannot serve: mnist-cnn (platform pytorch_libtorch): its runner needs torch: "
        "pip install 'llmops-xclient[torch]'",
        "cannot serve: 图像-onnx (model.onnx, no platform): its runner needs onnxruntime: "
        "pip install 'llmops-xclient[onnx]'",
    )


def test_an_onnx_file_that_cannot_be_read_refuses_only_its_model(tmp_path, nets) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    _save(nets["a"], tmp_path / "good" / "1", "onnx", ("model_input", "logits"))
    result = plan([tmp_path], None)
    assert [m.name for m in result.models] == ["good"]
    (line,) = result.refused
    assert line.startswith("cannot serve: broken (model.onnx, no platform): its config cannot be completed")
    assert "\n" not in line
