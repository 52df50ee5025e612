"""Quickstart: start a real Triton server on this machine and talk to a model over HTTP and gRPC.

Run: python examples/quickstart.py   (needs the 'server' extra: pip install 'llmops-xclient[server]')
"""

import numpy as np

from Xclient import ModelClient
from Xclient.server import DEMO_MODELS, LocalTritonServer

with LocalTritonServer(model_repository=DEMO_MODELS, models=["text"]) as server:
    for url in (server.http_url, server.grpc_url):
        with ModelClient(url, "text") as client:
            sample = client.infer_sample("hello, triton")  # str in, UTF-8 on the wire
            batch = client.infer_batch(np.array([["你好"], ["世界"]], dtype=object))
            print(f"{url:28} sample: {sample['UPPER'][0].decode()}  length {sample['LENGTH'][0]}")
            print(f"{'':28} batch:  {[row[0].decode() for row in batch['UPPER']]}")
