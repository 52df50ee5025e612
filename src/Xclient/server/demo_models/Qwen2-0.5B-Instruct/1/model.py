# Stand-in for an LLM on Triton's vLLM backend: the backend's tensor contract, a deterministic templated
# answer (see Xclient/server/_demo_llm.py and ../README.md). Not a language model.
from Xclient.server._demo_llm import VllmStandIn


class TritonPythonModel(VllmStandIn):
    pass
