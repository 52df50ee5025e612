"""``xclient embed`` and ``xclient rerank``: :class:`~Xclient.MetaLMEmbeddings` and :class:`~Xclient.MetaLMRerank`
on texts from the arguments, a file or stdin (one text per line)."""

from __future__ import annotations

import argparse
from typing import Any

from ._app import Commands, Context, add_rest
from ._inputs import read_texts
from ._output import is_tty

#: From this many texts on, ``embed`` shows a progress bar (when stderr is a terminal).
PROGRESS_MIN_TEXTS = 256


def add_commands(commands: Commands) -> None:
    embed = commands.add(
        "embed",
        _embed,
        help="embed texts (dense, or dense and sparse) as JSON Lines: one object per text",
        examples=[
            "xclient embed '什么是向量检索？' 'What is vector search?'",
            "xclient embed --sparse -f docs.txt > vectors.jsonl",
            "cat docs.txt | xclient embed --model bge-m3",
        ],
    )
    _add_texts_options(embed, "the embeddings model (default: bge-m3-v)")
    embed.add_argument("--sparse", action="store_true", help="add each text's sparse vector (token id -> weight)")

    rerank = commands.add(
        "rerank",
        _rerank,
        help="rank texts by relevance to a query, best first",
        examples=[
            "xclient rerank --query '什么是向量检索' -f passages.txt --top-n 3",
            "printf 'Paris is in France\\nBananas are yellow\\n' | xclient rerank --query 'capital of France' --json",
        ],
        json="a JSON array of {rank, index, score, text}",
    )
    rerank.add_argument("--query", "-q", required=True, help="the query")
    _add_texts_options(rerank, "the reranker (default: bge-reranker-v2-m3)")
    rerank.add_argument("--top-n", type=int, metavar="N", help="show only the N best")


def _add_texts_options(parser: argparse.ArgumentParser, model_help: str) -> None:
    add_rest(parser, "texts", metavar="TEXT", help="the texts (default: --file, else stdin)")
    parser.add_argument("--file", "-f", metavar="FILE", help="one text per line (-: stdin); blank lines skipped")
    parser.add_argument("--model", help=model_help)


def _options(ctx: Context) -> dict[str, Any]:
    """The adapter's fields: the connection, and the model when given (else the library's default)."""
    return {**ctx.connection.adapter_options(), **({"model": ctx.args.model} if ctx.args.model else {})}


def _embed(ctx: Context) -> int:
    from ..embeddings import MetaLMEmbeddings

    texts = read_texts(ctx.args.texts, ctx.args.file, ctx.stdin)
    progress = len(texts) >= PROGRESS_MIN_TEXTS and is_tty(ctx.console.stderr)
    embeddings = MetaLMEmbeddings(**_options(ctx), show_progress=progress)
    try:
        if ctx.args.sparse:
            dense, sparse = embeddings.embed_documents_sparse(texts)
        else:
            dense, sparse = embeddings.embed_documents(texts), []
    finally:
        embeddings.close()
    for index, (text, vector) in enumerate(zip(texts, dense, strict=True)):
        record: dict[str, Any] = {"index": index, "text": text, "dense": vector}
        if ctx.args.sparse:
            record["sparse"] = sparse[index]
        ctx.console.json(record)
    return 0


def _rerank(ctx: Context) -> int:
    from ..rerank import MetaLMRerank

    texts = read_texts(ctx.args.texts, ctx.args.file, ctx.stdin)
    reranker = MetaLMRerank(**_options(ctx))
    try:
        ranked = reranker.rerank(ctx.args.query, texts, top_n=ctx.args.top_n)
    finally:
        reranker.close()
    rows = [
        {"rank": rank, "index": r.index, "score": r.score, "text": texts[r.index]}
        for rank, r in enumerate(ranked, start=1)
    ]
    if ctx.args.json:
        ctx.console.json(rows)
    else:
        ctx.console.table(
            ["#", "score", "index", "text"], [[r["rank"], f"{r['score']:.4f}", r["index"], r["text"]] for r in rows]
        )
    return 0
