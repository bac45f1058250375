"""The two-worker sweep against a real PostgreSQL server on loopback (multi-machine storage).

Needs ``PRVR_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg2://prvr:prvr@127.0.0.1/prvr_optuna``);
.ci/run installs Debian's postgresql, starts it and sets the variable (commands: docs/sweeps.md).
The study name carries a timestamp so reruns against the same database never collide.
"""
from __future__ import annotations

import os
import time

import pytest
from test_sweeps import two_worker_study

from sweeps import storage

URL = os.environ.get("PRVR_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not URL, reason="PRVR_TEST_POSTGRES_URL is not set (a PostgreSQL URL "
                                       "postgresql+psycopg2://USER:PASS@127.0.0.1/DB; see "
                                       "docs/sweeps.md)"),
]


def test_postgres_reachable_and_bad_password_is_clear():
    storage.check_reachable(URL)
    user_part, _, host_part = URL.partition("@")
    bad = user_part.rsplit(":", 1)[0] + ":wrong-password@" + host_part
    with pytest.raises(storage.StorageError) as info:
        storage.check_reachable(bad)
    assert "wrong-password" not in str(info.value) and "not reachable" in str(info.value)


@pytest.mark.slow
def test_two_workers_share_one_postgres_storage(tiny_root, tmp_path):
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    two_worker_study(tiny_root, tmp_path, URL, mlflow_uri, f"pg-parallel-{time.time_ns()}")
