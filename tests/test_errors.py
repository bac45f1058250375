"""Errors that report bad configs, inputs or registrations derive from PRVRBenchError (the
command-line tools report it in one line) and keep the built-in a caller may catch."""
from __future__ import annotations

import pytest
import torch

from benchmark.config import DataConfig, EvalConfig, OptimConfig, TrainConfig
from benchmark.errors import PRVRBenchError
from benchmark.overrides import ConfigError
from benchmark.registry import PluginsMissingError, RegistrationError, Registry, register_variant
from benchmark.schedules import Schedule
from methods.dl_dkd import DLDKDConfig, soft_target_schedule
from methods.errors import MethodConfigError, MethodInputError
from methods.kdc_net import KRDConfig
from methods.layers.dta import DTAConfigError
from methods.layers.hsa import HSA, HSAConfigError
from methods.losses.krd import KRDInputError
from methods.mean_pool import MeanPoolConfig
from methods.ms_sl import MSSLConfig
from methods.teacher import TeacherMissingError, TeacherShapeError, teacher_video_scores


@pytest.mark.parametrize("cls, builtin", [
    (ConfigError, ValueError), (RegistrationError, ValueError), (PluginsMissingError, RuntimeError),
    (MethodConfigError, ValueError), (MethodInputError, ValueError), (TeacherMissingError, ValueError),
    (TeacherShapeError, ValueError), (KRDInputError, ValueError), (DTAConfigError, ValueError),
    (HSAConfigError, ValueError)])
def test_error_classes_derive_from_the_project_base_and_their_builtin(cls, builtin):
    assert issubclass(cls, PRVRBenchError) and issubclass(cls, builtin)


@pytest.mark.parametrize("make, match", [
    (lambda: DataConfig(max_frames=0), "data.max_frames"),
    (lambda: TrainConfig(epochs=0), "train.epochs"),
    (lambda: OptimConfig(lr=0.0), "optim.lr"),
    (lambda: EvalConfig(mv_edges=(0.5, 0.2)), "eval.mv_edges"),
    (lambda: Schedule(kind="sigmoid", sigmoid_k=-1.0), "sigmoid_k")])
def test_core_config_sections_raise_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("make, match", [
    (lambda: MeanPoolConfig(temperature=0.0), "temperature"),
    (lambda: MSSLConfig(hard_pool_size=0), "hard_pool_size"),
    (lambda: DLDKDConfig(kd_temperature=0.0), "kd_temperature"),
    (lambda: KRDConfig(window=4), "krd.window"),
    (lambda: HSA(8, kernels=(2, 2)), "hsa.kernels"),
    (lambda: soft_target_schedule("step", 0.8, 0.0), "α/β schedule 'step'"),
    (lambda: teacher_video_scores(torch.ones(2, 3), torch.ones(1, 4, 3), torch.ones(1, 4),
                                  kind="dot"), "teacher_soft_targets")])
def test_method_configs_raise_project_errors(make, match):
    with pytest.raises(PRVRBenchError, match=match):
        make()


def test_registration_errors_name_the_entry():
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(RegistrationError, match="duplicate thing name 'a'"):
        registry.add("a", 2)
    with pytest.raises(RegistrationError, match="<base>.<variant>"):
        register_variant("no-dot", "a variant without its base", {})
