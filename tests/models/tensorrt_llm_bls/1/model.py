# tensorrt_llm_bls stand-in with accumulate_tokens (see config.pbtxt and Xclient/server/_demo_llm.py).
from Xclient.server._demo_llm import TrtllmStandIn


class TritonPythonModel(TrtllmStandIn):
    pass
