# Stand-in for an LLM on PaddlePaddle FastDeploy's LLM serving: its Triton contract, a deterministic answer
# (see Xclient/server/_demo_fastdeploy.py and ../README.md). Not a language model.
from Xclient.server._demo_fastdeploy import FastDeployStandIn


class TritonPythonModel(FastDeployStandIn):
    pass
