"""Where a run's collection comes from: a given data root, or the cached synthetic one.

``prepare_data`` is the one step that every entry point shares (sweeps, the bench): a data root
given by the user is checked for the collection's folder; without one, the synthetic profile is
generated once under ``<runs>/data/<profile>-<scale>-s<seed>`` and reused by every later run.
It lives in the data layer so that nothing that only needs data pulls in Optuna or MLflow.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from benchmark import console
from benchmark.data.errors import DataError
from benchmark.data.layout import Layout

DATA_SEED = 0   # generator seed of the cached synthetic collection (same bytes on every machine)

Log = Callable[[str], None]


def synthetic_cache_dir(runs: Path, profile: str, scale: str, seed: int) -> Path:
    return Path(runs) / "data" / f"{profile}-{scale}-s{seed}"


def prepare_data(collection: str, data_root: str | Path | None, runs: Path, *, profile: str,
                 scale: str, seed: int = DATA_SEED, log: Log = print) -> tuple[Path, bool]:
    """(root, synthetic): the given root, or the cached synthetic collection (generated once)."""
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        layout = Layout.resolve(root, collection)
        if not layout.collection_dir.is_dir():
            raise DataError(root, f"data root has no {collection}/ folder (MS-SL layout expected)")
        return root, layout.is_synthetic()
    root = synthetic_cache_dir(runs, profile, scale, seed)
    layout = Layout.resolve(root, collection)
    if layout.is_synthetic():
        log(f"data: no data root given; using the cached synthetic '{profile}' profile "
            f"({scale}, seed {seed}) at {root}")
        return root, True
    log(f"data: no data root given; generating the synthetic '{profile}' profile "
        f"({scale}, seed {seed}) into {root} (once; later runs reuse it)")
    from benchmark.data.synthetic import GenerationError, generate

    t0 = time.perf_counter()
    try:
        generate(profile, scale, seed, root,      # atomic: temp dir, then rename
                 progress=console.generation_reporter(log))
    except GenerationError:
        if not layout.is_synthetic():             # not "another launcher won the race"
            raise
    log(f"data: generated in {time.perf_counter() - t0:.1f} s")
    return root, True
