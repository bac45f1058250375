"""Speed and memory benchmarks: ``python -m bench`` (``nox -s bench``).

The top layer of docs/architecture.md §1: modules here may import ``benchmark``, ``methods``,
``sweeps`` and ``reports``; nothing in those packages imports ``bench``. Each topic module
exposes ``run(data_root, device) -> dict`` of named results: speed as ratios against a naive
approach measured in the same run (``flops``: against the machine's FLOP bound), memory as
peak resident set (or CUDA allocator peak).
Nothing here is asserted.
"""
