"""The MLflow UI in a real browser: a real 3-trial sweep on the tiny generated collection, a real
``mlflow server`` on a free loopback port, and Debian's Chromium driven by Playwright.

The comparison URL (``tracking.comparison_url``) must open the runs table of the study's trials
with the swept parameters and ``val/SumR`` as columns, inside the window, without any click.
A screenshot is written to ``$PRVR_TEST_ARTIFACTS`` (default ``runs/test-artifacts/``) as
``mlflow-ui-comparison.png``, also when an assertion fails.

Needs: the ``playwright`` Python package (the ``test`` extra) and a Chromium binary
(``apt-get install chromium``; another one through ``$PRVR_CHROMIUM``). Without them the test
is skipped, except under ``CI=true``, where it fails: CI installs both (``.ci/run``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from benchmark import tracking
from sweeps import runner
from sweeps.studies import StudySpec

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # without these Chromium keeps trying the network, whose refusals slow every page down
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1920, "height": 1000}


def space_two_knobs(trial: optuna.Trial) -> dict:
    return {"optim.lr": trial.suggest_float("optim.lr", 1e-4, 1e-3, log=True),
            "optim.weight_decay": trial.suggest_float("optim.weight_decay", 0.0, 0.1)}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str):
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so this is a broken setup)")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("PRVR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        _missing(f"no Chromium at {path} (apt-get install chromium, or set PRVR_CHROMIUM)")
    return path


def _artifact_dir() -> Path:
    out = Path(os.environ.get("PRVR_TEST_ARTIFACTS") or REPO / "runs" / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}:\n"
                                 f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server at {base} not healthy after {timeout:.0f} s:\n"
                         f"{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def study_store(tiny_root, tmp_path_factory):
    """A store holding one 3-trial study, run by the real sweep machinery."""
    root = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    spec = StudySpec(name="ui", method="mean-pool", space=space_two_knobs, summary="browser test",
                     n_trials=3, epochs=1, pruner="none", seed=11)
    result = runner.run_study(spec, "tvr", data_root=tiny_root,
                              storage_url=f"sqlite:///{root / 'optuna.db'}", tracking_uri=uri,
                              runs_dir=root / "runs", log=lambda line: None, workers=0)
    assert result.n_complete == 3
    return root, uri, result


@pytest.fixture(scope="module")
def ui_server(study_store):
    root, uri, _ = study_store
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = root / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", uri,
             "--artifacts-destination", str(root / "mlartifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(base, proc, log)
        yield base
    finally:
        # the server and the uvicorn worker it starts form their own process group, ours to stop
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
        raise
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT)
        try:
            yield context.new_page()
        finally:
            context.close()


# the grid's column ids (MLflow's "<type>.`<key>`") and the header each must show
COLUMNS = {"params.`swept/optim.lr`": "swept/optim.lr",
           "params.`swept/optim.weight_decay`": "swept/optim.weight_decay",
           "metrics.`val/SumR`": "val/SumR", "metrics.`test/SumR`": "test/SumR"}


def _header(page, col_id: str):
    return page.locator(f'.ag-header-cell[col-id="{col_id}"]')


def _inside_window(locator) -> bool:
    box = locator.bounding_box()
    return (box is not None and box["x"] >= 0 and box["y"] >= 0
            and box["x"] + box["width"] <= VIEWPORT["width"]
            and box["y"] + box["height"] <= VIEWPORT["height"])


def test_comparison_url_shows_trials_swept_params_and_sumr(browser_page, study_store, ui_server):
    _, uri, result = study_store
    url = tracking.publish_comparison(uri, result.study_name, base_url=ui_server)
    assert url == tracking.comparison_url(ui_server, "1", result.study_name)
    trials = tracking.search_runs(uri, None, f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    names = sorted(r["run_name"] for r in trials)
    assert len(names) == 3 and all(n.startswith("t00") for n in names)

    page = browser_page
    shot = _artifact_dir() / "mlflow-ui-comparison.png"
    try:
        page.goto(url)
        for name in names:
            page.get_by_text(name, exact=True).wait_for(state="visible", timeout=90_000)
        for col_id in COLUMNS:
            _header(page, col_id).wait_for(state="visible", timeout=30_000)
    finally:
        page.screenshot(path=str(shot))
    for name in names:
        assert _inside_window(page.get_by_text(name, exact=True)), f"trial {name} not in view"
    for col_id, label in COLUMNS.items():
        cell = _header(page, col_id)
        assert cell.inner_text().strip() == label
        assert _inside_window(cell), f"column {label} not in view (screenshot: {shot})"
    # the cells hold this study's values: every trial's swept lr and its val/SumR
    grid = page.locator(".ag-root").inner_text()
    for run in trials:
        assert float(run["params"]["swept/optim.lr"]) == pytest.approx(
            float(run["params"]["optim.lr"]), rel=1e-5)
        assert run["params"]["swept/optim.lr"] in grid, run["run_name"]
        assert f"{run['metrics']['val/SumR']:g}" in grid, run["run_name"]
    # the trials are rows of their own, not folded under the study's parent run
    assert page.get_by_text(result.study_name, exact=True).count() == 0
    assert page.get_by_text("3 matching runs").is_visible()
    assert shot.stat().st_size > 10_000


def test_experiment_list_has_no_default_experiment(browser_page, study_store, ui_server):
    page = browser_page
    page.goto(f"{ui_server}/#/experiments")
    page.get_by_role("link", name="tvr-synthetic", exact=True).first.wait_for(
        state="visible", timeout=90_000)
    assert page.get_by_role("link", name="Default", exact=True).count() == 0
