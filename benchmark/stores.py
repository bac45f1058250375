"""Where runs and stores live (docs/architecture.md §9), decided in one place.

Precedence everywhere: command-line flag (or its config field), then environment, then default.

| what | flag | environment | default |
|---|---|---|---|
| run directory | ``--runs-dir`` | ``PRVR_RUNS_DIR`` | ``./runs`` |
| MLflow tracking | ``--tracking-uri`` | ``MLFLOW_TRACKING_URI`` | ``sqlite:///<runs>/mlflow.db`` |
| Optuna storage | ``--storage`` | ``PRVR_OPTUNA_STORAGE`` | ``sqlite:///<runs>/optuna.db`` |

MLflow artifacts of the default tracking store go to ``<runs>/mlartifacts``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

RUNS_DIR_ENV = "PRVR_RUNS_DIR"
MLFLOW_ENV = "MLFLOW_TRACKING_URI"
OPTUNA_ENV = "PRVR_OPTUNA_STORAGE"


def runs_dir(flag: str | os.PathLike | None = None) -> Path:
    """The run directory: flag, then $PRVR_RUNS_DIR, then ./runs (absolute, not created)."""
    value = flag if flag not in (None, "") else os.environ.get(RUNS_DIR_ENV) or "runs"
    return Path(value).expanduser().resolve()


def default_mlflow_uri(runs: Path) -> str:
    return f"sqlite:///{Path(runs).resolve() / 'mlflow.db'}"


def mlflow_artifact_root(runs: Path) -> Path:
    return Path(runs).resolve() / "mlartifacts"


def mlflow_uri(flag: str | None = None, runs: str | os.PathLike | None = None) -> str:
    """MLflow tracking URI: flag, then $MLFLOW_TRACKING_URI, then sqlite under the run directory."""
    if flag:
        return flag
    if os.environ.get(MLFLOW_ENV):
        return os.environ[MLFLOW_ENV]
    return default_mlflow_uri(runs_dir(runs))


def optuna_url(flag: str | None = None, runs: str | os.PathLike | None = None) -> str:
    """Optuna storage URL: flag, then $PRVR_OPTUNA_STORAGE, then sqlite under the run directory."""
    if flag:
        return flag
    if os.environ.get(OPTUNA_ENV):
        return os.environ[OPTUNA_ENV]
    return f"sqlite:///{runs_dir(runs) / 'optuna.db'}"


def checkpoint_dir(runs: str | os.PathLike | None, run_key: str) -> Path:
    """``<runs>/checkpoints/<run id or local name>/``: checkpoints and the run's local artifacts."""
    return runs_dir(runs) / "checkpoints" / run_key


def check_manifest(runs: str | os.PathLike | None) -> Path:
    """``<runs>/cache/data-checks.json``: the data value checks that passed (benchmark/data/manifest.py)."""
    return runs_dir(runs) / "cache" / "data-checks.json"


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def redact(url: str) -> str:
    """Hide the password of ``scheme://user:password@host`` for messages."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
