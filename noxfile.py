"""nox sessions: tests (default), lint, bench, gpu, sweep-tvr/-activitynet/-charades, report, mlflow-ui.

All sessions share ONE virtualenv, `.nox/prvr` (about 2.3 GB, built once in about 1.5 minutes;
reruns take seconds), with the pinned project and its `test` and `features` extras installed
(`features`, about 290 MB of transformers, PyAV and tokenizers, is there so that the feature
extraction tests run in the one environment); pip inside it finds the
local CPU torch build (docs/toolchain.md). nox 2026.10.20 has no per-session venv location, so
each session is declared without a venv of its own (`venv_backend="none"`) and `_install`
creates or reuses the shared one through nox's own `VirtualEnv` (virtualenv backend, Python
3.11) and puts its `bin/` first on PATH: `python`, `mlflow`, `pytest`, `ruff`, `pyright` in a
session are the shared environment's. `pip install -e .[test,features]` runs again only
when pyproject.toml or the extras changed (a stamp file in the venv). Extra arguments after
`--` pass through.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

# nox runs this file with its own interpreter, which has nox; the project venv that pyright
# resolves imports in does not (nox is not a project dependency).
import nox  # pyright: ignore[reportMissingImports]
from nox.virtualenv import VirtualEnv  # pyright: ignore[reportMissingImports]

nox.options.sessions = ["tests"]

PYTHON = "3.11"
SHARED_ENV = Path(".nox") / "prvr"
STAMP = ".prvr-installed"                       # sha256 of pyproject.toml of the last install
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}


def _install(session: nox.Session, extras: str = "test,features") -> None:
    """Create or reuse the shared environment, install the project when pyproject.toml
    changed, and make the session's commands resolve in it."""
    venv = VirtualEnv(str(SHARED_ENV), interpreter=PYTHON, reuse_existing=True,
                      venv_backend="virtualenv")
    created = venv.create()
    bin_dir = Path(venv.bin)
    want = hashlib.sha256(Path("pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = SHARED_ENV / STAMP
    if created or not stamp.is_file() or stamp.read_text().strip() != want:
        session.log(f"installing the project into the shared environment {SHARED_ENV} "
                    f"({'new: about 1-2 minutes and 2.3 GB' if created else 'pyproject.toml changed'})")
        session.run(str(bin_dir / "python"), "-m", "pip", "install", "-q", "-e", f".[{extras}]",
                    external=True)
        stamp.write_text(want + "\n")
    else:
        session.log(f"reusing the shared environment {SHARED_ENV} (pyproject.toml unchanged)")
    os.environ["VIRTUAL_ENV"] = venv.location
    path = os.environ.get("PATH", "")
    if not path.startswith(str(bin_dir) + os.pathsep):
        os.environ["PATH"] = str(bin_dir) + os.pathsep + path


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (real MLflow/Optuna stores; PostgreSQL tests run when PRVR_TEST_POSTGRES_URL is set)."""
    _install(session)
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]), env=ENV)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """Static checks: ruff (lint and import order) and pyright (basic mode); settings in pyproject.toml."""
    _install(session)
    session.run("ruff", "check", ".", env=ENV)
    session.run("pyright", env=ENV)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks (ratios against naive approaches, measured in one run)."""
    _install(session)
    session.run("python", "-m", "bench", *session.posargs, env=ENV)


# prints "available|torch version|CUDA version it was built for|device name" on one line
CUDA_CHECK = ("import torch; c = torch.cuda.is_available(); print(c, torch.__version__, torch.version.cuda, "
              "torch.cuda.get_device_name(0) if c else '-', sep='|')")


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """On a machine with CUDA, in one go: the `gpu`-marked tests (CPU/CUDA scores on the same
    weights within 1e-4, CUDA epochs in fp32 and bf16), then the bench on CUDA; extra
    arguments go to the bench (`nox -s gpu -- --only flops`). Without CUDA it stops at once."""
    _install(session)
    found = session.run("python", "-c", CUDA_CHECK, silent=True, env=ENV)
    line = str(found or "").strip().splitlines()[-1:] or ["False|?|?|-"]
    available, version, built_for, name = (line[0].split("|") + ["?"] * 4)[:4]
    if available != "True":
        session.error(f"nox -s gpu needs CUDA, and torch {version} in {SHARED_ENV} sees none "
                      f"(built for CUDA {built_for}); run it on a machine with an NVIDIA GPU and "
                      "a CUDA build of torch")
    session.log(f"CUDA device: {name} (torch {version}, CUDA {built_for})")
    session.run("python", "-m", "pytest", "-m", "gpu", "-q", "-rs", env=ENV)
    session.run("python", "-m", "bench", "--device", "cuda", *session.posargs, env=ENV)


def _sweep(session: nox.Session, collection: str) -> None:
    _install(session)
    args = ["--study", f"{collection}-default", "--collection", collection]
    session.run("python", "-m", "sweeps.run", *args, *session.posargs, env=ENV)


@nox.session(name="sweep-tvr", venv_backend="none")
def sweep_tvr(session: nox.Session) -> None:
    """The main job: the default TVR sweep (synthetic `small` TVR unless --data-root is given)."""
    _sweep(session, "tvr")


@nox.session(name="sweep-activitynet", venv_backend="none")
def sweep_activitynet(session: nox.Session) -> None:
    _sweep(session, "activitynet")


@nox.session(name="sweep-charades", venv_backend="none")
def sweep_charades(session: nox.Session) -> None:
    _sweep(session, "charades")


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Tables and figures from the tracked runs (python -m benchmark.report)."""
    _install(session)
    session.run("python", "-m", "benchmark.report", *session.posargs, env=ENV)


@nox.session(name="mlflow-ui", venv_backend="none")
def mlflow_ui(session: nox.Session) -> None:
    """Serve the MLflow UI for the default store on 127.0.0.1 (port 5000 unless --port is given)."""
    _install(session)
    runs = os.environ.get("PRVR_RUNS_DIR", "runs")
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{runs}/mlflow.db")
    port, args = "5000", list(session.posargs)        # the port the UI listens on, for the URLs
    for i, arg in enumerate(args):
        if arg in ("--port", "-p") and i + 1 < len(args):
            port = args[i + 1]
        elif arg.startswith("--port="):
            port = arg.split("=", 1)[1]
    # store each study's comparison view and print the URL that opens it (benchmark/tracking.py)
    session.run("python", "-m", "benchmark.tracking", "--tracking-uri", uri,
                "--base-url", f"http://127.0.0.1:{port}", env=ENV)
    session.run("mlflow", "ui", "--host", "127.0.0.1", "--backend-store-uri", uri,
                "--artifacts-destination", f"{runs}/mlartifacts", *session.posargs, env=ENV)
