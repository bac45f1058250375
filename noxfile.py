"""nox sessions: tests (default), lint, bench, sweep-tvr/-activitynet/-charades, report, mlflow-ui.

Every session builds (or reuses) one virtualenv with the pinned project installed; pip inside the
venv finds the local CPU torch build (docs/toolchain.md). Extra arguments after `--` pass through.
"""
from __future__ import annotations

import os

# nox runs this file with its own interpreter, which has nox; the project venv that pyright
# resolves imports in does not (nox is not a project dependency).
import nox  # pyright: ignore[reportMissingImports]

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYTHON = "3.11"
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install("-q", "-e", f".[{extras}]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (real MLflow/Optuna stores; PostgreSQL tests run when PRVR_TEST_POSTGRES_URL is set)."""
    _install(session)
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]), env=ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Static checks: ruff (lint and import order) and pyright (basic mode); settings in pyproject.toml."""
    _install(session)
    session.run("ruff", "check", ".", env=ENV)
    session.run("pyright", env=ENV)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks (ratios against naive approaches, measured in one run)."""
    _install(session)
    session.run("python", "-m", "bench", *session.posargs, env=ENV)


def _sweep(session: nox.Session, collection: str) -> None:
    _install(session)
    args = ["--study", f"{collection}-default", "--collection", collection]
    session.run("python", "-m", "sweeps.run", *args, *session.posargs, env=ENV)


@nox.session(name="sweep-tvr", python=PYTHON)
def sweep_tvr(session: nox.Session) -> None:
    """The main job: the default TVR sweep (synthetic `small` TVR unless --data-root is given)."""
    _sweep(session, "tvr")


@nox.session(name="sweep-activitynet", python=PYTHON)
def sweep_activitynet(session: nox.Session) -> None:
    _sweep(session, "activitynet")


@nox.session(name="sweep-charades", python=PYTHON)
def sweep_charades(session: nox.Session) -> None:
    _sweep(session, "charades")


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Tables and figures from the tracked runs (python -m benchmark.report)."""
    _install(session)
    session.run("python", "-m", "benchmark.report", *session.posargs, env=ENV)


@nox.session(name="mlflow-ui", python=PYTHON)
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
