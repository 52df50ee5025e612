"""Python-backend runners: each serves one kind of model file through the wheel's Python backend.

A generated repository (:mod:`Xclient.server._repository`) gives each version of a TorchScript or
ONNX model a ``model.py`` that imports ``TritonPythonModel`` from one of these modules, and a
``xclient_runner.json`` naming the file to load. They run inside the Python-backend stub, where
``triton_python_backend_utils`` exists; nothing here imports it at module level.
"""
