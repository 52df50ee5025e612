# TensorRT-LLM ensemble stand-in at the release its config names (see config.pbtxt and Xclient/server/_demo_llm.py).
from Xclient.server._demo_llm import TrtllmStandIn


class TritonPythonModel(TrtllmStandIn):
    pass
