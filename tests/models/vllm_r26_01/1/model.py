# vLLM backend stand-in at the release its config names (see config.pbtxt and Xclient/server/_demo_llm.py).
from Xclient.server._demo_llm import VllmStandIn


class TritonPythonModel(VllmStandIn):
    pass
