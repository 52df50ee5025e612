# The demo Qwen2 stand-in (Xclient/server/_demo_llm.py), pacing its tokens as a model does: 1 ms before each.
from Xclient.server._demo_llm import VllmStandIn


class TritonPythonModel(VllmStandIn):
    pass
