"""Xclient's benchmarks: Xclient against raw ``tritonclient`` and NVIDIA PyTriton's client, side by side.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a short run, ``--soak`` for
the one-minute soak, ``--help`` for the rest). It starts one local Triton server with the models in
``benchmarks/models`` and two demo models, runs every group interleaved, prints the tables and
writes them to ``benchmarks/results/latest.md`` and ``latest.json``.
"""
