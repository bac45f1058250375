"""Training-loop speed and memory: seconds per epoch of mean-pool on small synthetic TVR.

Trains mean-pool for ``EPOCHS`` epochs with the one training loop (``bench.epochs``: the
reference optimiser, the video-centric loader, validation each epoch, test at the end) in a
fresh child process. Reports mean seconds per training epoch, mean seconds per validation
pass, peak RSS (CUDA allocator peak on CUDA as well), the number of steps per epoch and the
reached SumR (a sanity value, not a result). Never asserted.
"""
from __future__ import annotations

import pathlib

from bench.epochs import flatten_measured, measure_methods

EPOCHS = 3


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    return {**flatten_measured(measure_methods(("mean-pool",), data_root, device, epochs=EPOCHS))}
