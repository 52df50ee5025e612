# TensorRT-LLM v0.5-style stand-in (see config.pbtxt and Xclient/server/_demo_llm.py).
from Xclient.server._demo_llm import TrtllmStandIn


class TritonPythonModel(TrtllmStandIn):
    pass
