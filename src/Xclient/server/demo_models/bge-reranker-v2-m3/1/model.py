# Stand-in for the deployed bge-reranker-v2-m3 (docs/protocols.md section 5): per sample, query [1] and
# passages [N] -> score [N], raw logits 10 * (cos(query, passage) - 0.3) with all-MiniLM-L6-v2 vectors,
# the cosine blended with the share of the query's Chinese characters a passage has when the query has
# any (see Xclient.server._minilm.rerank_logits). A similarity, not a trained cross-encoder.
import numpy as np
import triton_python_backend_utils as pb_utils

from Xclient.server._minilm import MiniLM, char_overlap, rerank_logits


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        self.model = MiniLM()

    def execute(self, requests):
        responses = []
        for req in requests:
            try:
                queries = pb_utils.get_input_tensor_by_name(req, "query").as_numpy()  # [B, 1]
                passages = pb_utils.get_input_tensor_by_name(req, "passages").as_numpy()  # [B, N]
                batch, n = passages.shape
                texts = [_text(q) for q in queries.reshape(-1)] + [_text(p) for p in passages.reshape(-1)]
            except UnicodeDecodeError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"input is not UTF-8: {e}")))
                continue
            vectors = self.model.encode(texts).sentence
            scores = np.stack(
                [
                    rerank_logits(
                        vectors[b],
                        vectors[batch + b * n : batch + (b + 1) * n],
                        char_overlap(texts[b], texts[batch + b * n : batch + (b + 1) * n]),
                    )
                    for b in range(batch)
                ]
            )
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("score", scores)]))
        return responses
