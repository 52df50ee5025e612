# Stand-in for TensorRT-LLM's ensemble: its tensor contract, a deterministic templated answer (see
# Xclient/server/_demo_llm.py and ../README.md). Not a language model.
from Xclient.server._demo_llm import TrtllmStandIn


class TritonPythonModel(TrtllmStandIn):
    pass
