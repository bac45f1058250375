"""Optuna storage from a URL: SQLite by default, PostgreSQL for many machines (architecture §9).

Both go through Optuna's RDB storage, whose heartbeat lets any worker fail the RUNNING trials
of a worker that stopped beating (killed, machine lost) once ``grace_period`` has passed. The
trial is then failed, not retried: a retry would re-run a config that may have killed the
worker. :func:`check_reachable` contacts the database before any training starts, and
:func:`create_or_load_study` creates the study once, in the launcher, before workers start
(parallel schema creation on a new SQLite file races, docs/toolchain.md).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Literal
from urllib.parse import unquote

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from benchmark.errors import PRVRBenchError
from benchmark.stores import redact

HEARTBEAT_INTERVAL = 10      # seconds between heartbeats of a running trial
GRACE_PERIOD = 60            # a trial without a heartbeat this long is stale (other hosts)
SQLITE_TIMEOUT = 60          # seconds a SQLite writer waits on a lock held by another worker
CONNECT_TIMEOUT = 5          # seconds to reach a PostgreSQL server


class StorageError(PRVRBenchError, ValueError):
    """The Optuna storage URL is wrong or cannot be reached; names the URL (password hidden)."""


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""


def sqlite_file(url: str) -> Path | None:
    """The database file of ``sqlite:///path`` (relative) or ``sqlite:////abs/path``."""
    if _scheme(url) != "sqlite":
        return None
    return Path(unquote(url[len("sqlite:///"):]))


def _engine_kwargs(url: str) -> dict:
    scheme = _scheme(url)
    if scheme == "sqlite":
        return {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    if scheme.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}
    return {}


def validate_url(url: str) -> str:
    """Reject URLs this project does not support, with the fix in the message."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        return url
    if scheme == "postgresql+psycopg2":
        return url
    if scheme in ("postgresql", "postgres"):
        raise StorageError(
            f"Optuna storage {redact(url)}: write 'postgresql+psycopg2://...' - SQLAlchemy 2.1 "
            "maps a bare 'postgresql://' to psycopg 3, which is not installed (psycopg2-binary is)")
    raise StorageError(f"Optuna storage {redact(url)}: unsupported scheme {scheme or '(none)'!r};"
                       " use sqlite:///path/optuna.db or postgresql+psycopg2://USER:PASS@HOST/DB")


def check_reachable(url: str) -> None:
    """Open one connection and run ``SELECT 1``; raise StorageError naming the URL.

    For SQLite the parent directory is created (a new file is a valid empty store)."""
    validate_url(url)
    db = sqlite_file(url)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Optuna storage {redact(url)}: cannot create {db.parent}: "
                               f"{exc}") from None
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - every driver error means "not reachable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"Optuna storage {redact(url)} is not reachable: {redact(first)}") from None
    finally:
        engine.dispose()


def make_storage(url: str, *,
                 stale_trial_callback: Callable[[optuna.study.Study, optuna.trial.FrozenTrial],
                                                None] | None = None,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = GRACE_PERIOD) -> RDBStorage:
    """An RDB storage with heartbeat. ``stale_trial_callback`` runs for each stale trial this
    process fails (the sweep closes the trial's MLflow run there)."""
    validate_url(url)
    try:
        with warnings.catch_warnings():
            # heartbeats are marked experimental; the kill-and-resume path relies on them knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                              heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              heartbeat_stale_trial_callback=stale_trial_callback)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"Optuna storage {redact(url)}: {redact(str(exc))}") from None


def create_or_load_study(storage: RDBStorage, study_name: str, *,
                         direction: Literal["maximize", "minimize"],
                         pruner: optuna.pruners.BasePruner | None = None,
                         sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create ``study_name`` or load it when it exists (rerunning a command resumes)."""
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                pruner=pruner, sampler=sampler, load_if_exists=True)
    if study.direction.name.lower() != direction.lower():
        raise StorageError(f"study {study_name!r} exists with direction "
                           f"{study.direction.name.lower()}, not {direction}")
    return study
