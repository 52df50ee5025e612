import numpy as np

from Xclient.client import ModelConfig

HTTP_CONFIG = {
    "name": "text",
    "platform": "",
    "backend": "python",
    "max_batch_size": 8,
    "input": [
        {"name": "INPUT_TEXT", "data_type": "TYPE_STRING", "dims": [1], "optional": False},
        {"name": "scale", "data_type": "TYPE_FP16", "dims": [-1, 3], "optional": True},
    ],
    "output": [{"name": "LENGTH", "data_type": "TYPE_INT32", "dims": [1]}],
}
# What tritonclient.grpc's get_model_config(as_json=True) returns: wrapped, int64 dims as strings,
# defaults omitted.
GRPC_CONFIG = {
    "config": {
        "name": "text",
        "backend": "python",
        "max_batch_size": 8,
        "input": [
            {"name": "INPUT_TEXT", "data_type": "TYPE_STRING", "dims": ["1"]},
            {"name": "scale", "data_type": "TYPE_FP16", "dims": ["-1", "3"], "optional": True},
        ],
        "output": [{"name": "LENGTH", "data_type": "TYPE_INT32", "dims": ["1"]}],
    }
}


def test_model_config_is_the_same_object_from_either_protocol():
    assert ModelConfig.from_dict(HTTP_CONFIG) == ModelConfig.from_dict(GRPC_CONFIG)


def test_model_config_types_inputs_and_outputs():
    config = ModelConfig.from_dict(GRPC_CONFIG, version="2")
    assert (config.name, config.version, config.max_batch_size, config.batching) == ("text", "2", 8, True)
    text, scale = config.inputs
    assert (text.name, text.dtype, text.shape, text.optional, text.triton_dtype) == (
        "INPUT_TEXT",
        np.dtype(object),
        (1,),
        False,
        "BYTES",
    )
    assert (scale.dtype, scale.shape, scale.optional) == (np.dtype(np.float16), (-1, 3), True)
    assert config.outputs[0].dtype == np.dtype(np.int32)
    assert not config.decoupled


def test_model_config_reads_the_decoupled_flag():
    raw = {
        "name": "llm",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [],
        "output": [],
    }
    config = ModelConfig.from_dict(raw)
    assert config.decoupled and not config.batching
