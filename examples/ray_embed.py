"""Embed a JSONL corpus on Ray Data and write the vectors to one Parquet file.

    pip install 'llmops-xclient[ray]'
    python examples/ray_embed.py docs.jsonl vectors.parquet --url grpc://localhost:8001 --model bge-m3-v --sparse

Each line of the JSONL file is a JSON object with a text field (``--text-field``, default ``text``); every
field goes through to the Parquet file, in the input order, beside ``embedding`` (a list of floats) and,
with ``--sparse``, ``sparse_indices`` and ``sparse_values``. ``--url`` may be given several times: the
replicas share the load. ``--on-error column`` keeps failed rows, with their message in ``error``;
by default the first failure stops the job.

Ray runs here, on a local cluster of ``--num-cpus`` CPUs (or joins ``--address``); ``--actors`` Ray
actors each hold one Xclient client with ``--max-concurrency`` requests in flight.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("input", type=pathlib.Path, help="a JSONL file, one JSON object per line")
    parser.add_argument("output", type=pathlib.Path, help="the Parquet file to write")
    parser.add_argument("--url", action="append", help="a Triton URL; repeat for several replicas")
    parser.add_argument("--model", default="bge-m3-v")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--sparse", action="store_true", help="also the sparse vectors (bge-m3 style models)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per Ray batch")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors, each with one client")
    parser.add_argument("--max-concurrency", type=int, default=4, help="requests in flight per actor")
    parser.add_argument("--on-error", choices=["raise", "column"], default="raise")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster")
    parser.add_argument("--address", default=None, help="a running Ray cluster to join (default: start one)")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq
    import ray

    from Xclient.ray import Embedder

    urls = args.url or ["grpc://localhost:8001"]
    ray.init(address=args.address, num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        dataset = ray.data.read_json(str(args.input), lines=True)
        embedded = dataset.map_batches(
            Embedder,
            fn_constructor_kwargs={
                "url": urls,
                "model": args.model,
                "text_column": args.text_field,
                "sparse_column": "sparse" if args.sparse else None,
                "max_concurrency": args.max_concurrency,
                "on_error": args.on_error,
            },
            batch_size=args.batch_size,
            concurrency=args.actors,
        )
        rows = failed = 0
        writer: Any = None
        try:  # one file, written as the batches arrive, in order
            for table in embedded.iter_batches(batch_format="pyarrow", batch_size=None):
                if writer is None:
                    writer = pq.ParquetWriter(str(args.output), table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += table.num_rows
                if "error" in table.column_names:
                    failed += table.num_rows - table.column("error").null_count
        finally:
            if writer is not None:
                writer.close()
    finally:
        ray.shutdown()
    if writer is None:
        print(f"{args.input}: no rows", file=sys.stderr)
        return 1
    print(json.dumps({"rows": rows, "failed": failed, "output": str(args.output)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
