"""A real Triton Inference Server on this machine, for development, demos and tests (extra ``server``).

Example::

    from Xclient.server import DEMO_MODELS, LocalTritonServer

    with LocalTritonServer(model_repository=DEMO_MODELS) as server:
        print(server.grpc_url)          # grpc://127.0.0.1:40123
"""

import pathlib

from ._local import LocalTritonServer

#: The models shipped with Xclient for its examples, demo and tests (see demo_models/README.md).
DEMO_MODELS = pathlib.Path(__file__).parent / "demo_models"

__all__ = ["DEMO_MODELS", "LocalTritonServer"]
