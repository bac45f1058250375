"""Run identity: names and tags of a run, built once (benchmark.naming, benchmark.experiment)."""
from __future__ import annotations

import os
import subprocess

import pytest

from benchmark import naming
from benchmark.config import load_config
from benchmark.experiment import identify
from benchmark.naming import KIND_STUDY, RunIdentity, Tag, TrialStateTag


def _identity(**kw) -> RunIdentity:
    base = dict(method="dl-dkd++", variant="dl-dkd++.no-kd", collection="tvr", synthetic=True,
                seed=3, experiment="tvr-synthetic")
    return RunIdentity(**{**base, **kw})


def test_tag_keys_are_the_documented_mlflow_names():
    """The public contract of docs/architecture.md §7: users filter runs by these names in the
    MLflow UI and search syntax, so a rename here must be a deliberate, documented change."""
    assert (Tag.METHOD, Tag.VARIANT, Tag.COLLECTION, Tag.SYNTHETIC, Tag.SEED) == (
        "method", "variant", "collection", "synthetic", "seed")
    assert (Tag.STUDY, Tag.TRIAL, Tag.TRIAL_STATE, Tag.KIND, Tag.RECONSTRUCTION) == (
        "study", "trial", "trial_state", "kind", "reconstruction")
    assert (TrialStateTag.COMPLETE, TrialStateTag.PRUNED, TrialStateTag.FAIL) == (
        "COMPLETE", "PRUNED", "FAIL")


def test_experiment_and_study_names():
    assert naming.experiment_name("tvr", False) == "tvr"
    assert naming.experiment_name("tvr", True) == "tvr-synthetic"
    assert naming.study_name("tvr-default", "tvr", True) == "tvr-default-synthetic"
    assert naming.study_name("kdc-net-krd", "tvr", False) == "kdc-net-krd-tvr"


def test_run_names():
    assert _identity().run_name == "dl-dkd++.no-kd-tvr-synthetic-s3"
    trial = _identity(variant="ms-sl", collection="charades", synthetic=False, seed=0,
                      study="s", trial=7)
    assert trial.run_name == "t007-ms-sl-charades-s0"


def test_tags_of_a_plain_run_and_a_trial():
    tags = _identity(reconstruction=True, git_commit="abc", git_dirty="false").tags()
    assert tags == {Tag.METHOD: "dl-dkd++", Tag.VARIANT: "dl-dkd++.no-kd", Tag.COLLECTION: "tvr",
                    Tag.SYNTHETIC: "true", Tag.SEED: "3", Tag.GIT_COMMIT: "abc",
                    Tag.GIT_DIRTY: "false", Tag.RECONSTRUCTION: "true"}
    trial = _identity(synthetic=False, study="st", trial=4).tags()
    assert trial[Tag.SYNTHETIC] == "false" and Tag.RECONSTRUCTION not in trial
    assert (trial[Tag.STUDY], trial[Tag.TRIAL], trial[Tag.TRIAL_STATE]) == ("st", "4",
                                                                             TrialStateTag.RUNNING)
    assert Tag.KIND not in trial and KIND_STUDY == "study"


def test_identify_reads_registry_and_config():
    cfg = load_config("kdc-net.no-krd", "tvr", data_root="x", seed=5)
    ident = identify(cfg, True)
    assert (ident.method, ident.variant, ident.seed, ident.synthetic) == ("kdc-net", "kdc-net.no-krd",
                                                                          5, True)
    assert ident.reconstruction and ident.experiment == "tvr-synthetic"
    assert ident.study is None and ident.trial is None
    real = identify(load_config("ms-sl", "tvr", data_root="x",
                                overrides={"tracking.experiment": "mine"}), False,
                    study="st", trial=2)
    assert not real.reconstruction and real.experiment == "mine" and real.trial == 2


def test_prepare_refuses_an_identity_that_disagrees_with_the_data(tiny_root):
    from benchmark.config import ConfigError
    from benchmark.experiment import prepare

    cfg = load_config("mean-pool", "tvr", data_root=str(tiny_root))
    with pytest.raises(ConfigError, match="synthetic"):
        prepare(cfg, identify(cfg, False))


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_tags_follow_the_checkout(tmp_path, monkeypatch):
    """git_commit/git_dirty read the checkout at ``naming._REPO``; pointed at a throwaway
    repository they must report its HEAD and whether a tracked file differs from it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))   # never find an outer repo
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)            # no user settings
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{key}_NAME", "test")
        monkeypatch.setenv(f"{key}_EMAIL", "test@example.invalid")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "tracked.txt").write_text("one\n")
    _git(repo, "add", "tracked.txt")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(naming, "_REPO", repo)

    cfg = load_config("mean-pool", "tvr", data_root="x")

    def tags() -> dict[str, str]:
        return identify(cfg, True).tags()

    assert len(head) == 40 and naming.git_commit() == head
    assert naming.git_dirty() == "false" and tags()["git_dirty"] == "false"
    assert tags()["git_commit"] == head
    (repo / "untracked.txt").write_text("new\n")                    # untracked files do not count
    assert naming.git_dirty() == "false"
    (repo / "tracked.txt").write_text("two\n")                      # a tracked file differs
    assert naming.git_dirty() == "true" and tags()["git_dirty"] == "true"
    _git(repo, "add", "tracked.txt")                                 # staged still differs from HEAD
    assert naming.git_dirty() == "true"
    _git(repo, "commit", "-q", "-m", "second")
    assert naming.git_dirty() == "false" and naming.git_commit() == _git(repo, "rev-parse", "HEAD") != head

    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    monkeypatch.setattr(naming, "_REPO", plain)
    assert naming.git_dirty() == "unknown" and naming.git_commit() == "unknown"
    assert tags()["git_dirty"] == "unknown" and tags()["git_commit"] == "unknown"
