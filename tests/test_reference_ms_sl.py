"""ms-sl reference checkpoint import (methods/ms_sl_reference.py, issue 12).

The exactness tests read ``../shared/data/reference-checkpoints`` (README there): the MS-SL
reference code's own ``model.ckpt`` after 2 epochs on the tiny ``synref`` collection, and the
score matrices its own test inference computed. Imported into ``MSSL`` and scored by our
evaluator, every matrix must match to 1e-5 and the fused metrics must equal the reference's.
They skip, saying why, when the fixtures are absent. The structural tests need no fixtures.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
import pytest
import torch

from benchmark.config import load_config
from benchmark.data.split import load_split
from benchmark.evaluate import evaluate, evaluate_method
from benchmark.interface import FeatureDims
from benchmark.reference import StateMismatchError, load_reference_checkpoint, load_state_strict
from benchmark.registry import (
    ReferenceImportError,
    find_reference_importer,
    get_method,
    get_reference_importer,
)
from methods.ms_sl import MSSL, MSSLConfig
from methods.ms_sl_reference import KEY_MAP, convert, data_overrides, recognizes

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reference-checkpoints"
MSSL_DIR = REFERENCE / "ms-sl"
TOLERANCE = 1e-5

needs_fixtures = pytest.mark.skipif(
    not (MSSL_DIR / "model.ckpt").is_file(),
    reason=f"reference checkpoint fixtures absent: {MSSL_DIR} (../shared/data/reference-checkpoints)")


# ---------------------------------------------------------------- reading a reference checkpoint

def read_reference_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """(state dict, model_cfg, epoch) through the core's allow-list reader."""
    ref = load_reference_checkpoint(path)
    return ref.state_dict, ref.model_cfg, -1 if ref.epoch is None else ref.epoch


def load_into(model: MSSL, state_dict: Mapping[str, Any]) -> MSSL:
    """The core's strict load: a shape error names the data's input sizes."""
    load_state_strict(model, state_dict, "ms-sl reference checkpoint")
    return model


# ---------------------------------------------------------------- no fixtures needed

def _reference_state_dict(model: MSSL) -> dict[str, torch.Tensor]:
    """``model``'s parameters under the reference's names (KEY_MAP inverted)."""
    ours = model.state_dict()
    return {ref: ours[mine].clone() for ref, mine in KEY_MAP.items()}


SMALL_DIMS = FeatureDims(query=12, video=10, max_frames=16, max_query_tokens=6, num_clips=8)
SMALL_CFG = {"hidden_size": 8, "n_heads": 2, "input_drop": 0.1, "drop": 0.1, "margin": 0.1,
             "hard_pool_size": 20, "query_input_size": 12, "visual_input_size": 10,
             "max_ctx_l": 16, "max_desc_l": 6, "map_size": 8, "device": [0],
             "use_hard_negative": False, "initializer_range": 0.02}


def _small_model(seed: int = 0) -> MSSL:
    torch.manual_seed(seed)
    return MSSL(MSSLConfig(hidden_size=8, num_heads=2), SMALL_DIMS)


def test_key_map_covers_every_mssl_parameter_once():
    ours = set(MSSL(MSSLConfig(hidden_size=8, num_heads=2), SMALL_DIMS).state_dict())
    assert set(KEY_MAP.values()) == ours
    assert len(set(KEY_MAP.values())) == len(KEY_MAP)


def test_round_trip_and_overrides():
    source = _small_model(0)
    reference = _reference_state_dict(source)
    assert recognizes(reference)
    assert find_reference_importer(reference).base == "ms-sl"
    overrides, ours = get_reference_importer("ms-sl").convert(reference, SMALL_CFG)
    assert overrides == {"method.hidden_size": 8, "method.num_heads": 2,
                         "method.input_dropout": 0.1, "method.dropout": 0.1, "method.margin": 0.1,
                         "method.hard_pool_size": 20, "data.max_frames": 16,
                         "data.max_query_tokens": 6, "data.num_clips": 8}
    assert data_overrides(SMALL_CFG) == {"data.max_frames": 16, "data.max_query_tokens": 6,
                                         "data.num_clips": 8}
    target = load_into(_small_model(1), ours)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    weights = convert(reference, {**SMALL_CFG, "clip_scale_w": 0.5, "frame_scale_w": 0.5})[0]
    assert (weights["method.clip_weight"], weights["method.frame_weight"]) == (0.5, 0.5)


def test_truncated_state_dict_names_the_missing_keys():
    reference = _reference_state_dict(_small_model())
    del reference["mapping_linear.1.weight"], reference["frame_encoder.self.key.bias"]
    with pytest.raises(ReferenceImportError,
                       match=r"missing 2 key\(s\): frame_encoder.self.key.bias, mapping_linear.1.weight"):
        convert(reference, SMALL_CFG)


def test_extra_key_is_named():
    reference = _reference_state_dict(_small_model())
    reference["video_query_mapping.weight"] = torch.zeros(8, 8)
    with pytest.raises(ReferenceImportError, match=r"unexpected 1 key\(s\): video_query_mapping.weight"):
        convert(reference, SMALL_CFG)


def test_dl_dkd_looking_state_dict_is_refused_naming_keys():
    reference = {f"A_{k}" if not k.startswith("clip_") else k: v
                 for k, v in _reference_state_dict(_small_model()).items()
                 if not k.startswith("clip_")}
    assert not recognizes(reference)
    with pytest.raises(ReferenceImportError, match=r"missing .*clip_encoder.self.key.bias.*"
                                                   r"unexpected .*A_frame_encoder"):
        convert(reference, SMALL_CFG)


def test_config_and_shape_disagreements_are_refused():
    reference = _reference_state_dict(_small_model())
    with pytest.raises(ReferenceImportError, match="hidden_size 16 differs from the tensors' 8"):
        convert(reference, {**SMALL_CFG, "hidden_size": 16})
    with pytest.raises(ReferenceImportError, match="not a multiple of model_cfg n_heads 3"):
        convert(reference, {**SMALL_CFG, "n_heads": 3})
    with pytest.raises(ReferenceImportError, match="invalid config.*dropout must be in"):
        convert(reference, {**SMALL_CFG, "drop": 1.0})
    with pytest.raises(ReferenceImportError, match="unreadable model_cfg value"):
        convert(reference, {**SMALL_CFG, "margin": "wide"})
    with pytest.raises(ReferenceImportError, match="visual_input_size 11 differs"):
        convert(reference, {**SMALL_CFG, "visual_input_size": 11})
    with pytest.raises(ReferenceImportError, match="max_ctx_l 128 differs"):
        convert(reference, {**SMALL_CFG, "max_ctx_l": 128})
    reference["frame_encoder.output.dense.weight"] = torch.zeros(8, 7)
    with pytest.raises(ReferenceImportError, match=r"frame_encoder.output.dense.weight \(8, 7\)"):
        convert(reference, SMALL_CFG)


def test_dims_mismatch_with_the_data_is_caught_when_loading():
    _, ours = convert(_reference_state_dict(_small_model()), SMALL_CFG)
    other = MSSL(MSSLConfig(hidden_size=8, num_heads=2),
                 FeatureDims(query=12, video=11, max_frames=16, max_query_tokens=6, num_clips=8))
    with pytest.raises(StateMismatchError, match=r"shape mismatch.*\(10,\) vs \(11,\)"):
        load_into(other, ours)


# ---------------------------------------------------------------- exactness on the fixtures

@pytest.fixture(scope="module")
def imported():
    """The reference checkpoint imported into MSSL, the test split and the reference files."""
    state_dict, model_cfg, _ = read_reference_checkpoint(MSSL_DIR / "model.ckpt")
    importer = find_reference_importer(state_dict)
    assert importer.base == "ms-sl"
    overrides, ours = importer.convert(state_dict, model_cfg)
    cfg = load_config("ms-sl", "synref", data_root=REFERENCE / "data",
                      overrides={"data.visual_feature": "i3d_ref", **overrides})
    d = cfg.data
    assert d.data_root is not None
    split = load_split(d.data_root, d.collection, "test", visual_feature=d.visual_feature,
                       requires=MSSL.requirements(cfg.method), max_frames=d.max_frames,
                       max_query_tokens=d.max_query_tokens, num_clips=d.num_clips)
    assert get_method("ms-sl").cls is MSSL and isinstance(cfg.method, MSSLConfig)
    model = load_into(MSSL(cfg.method, split.dims), ours)
    model.eval()
    with torch.no_grad():
        queries = model.encode_queries(split.query_batch(np.arange(split.num_queries)))
        videos = model.encode_videos(split.video_batch(np.arange(split.num_videos)))
        scores = {k: v.numpy() for k, v in model.score(queries, videos).items()}
    with np.load(MSSL_DIR / "test_scores.npz", allow_pickle=False) as npz:
        ref_scores = {k: npz[k] for k in npz.files}
    reference = json.loads((MSSL_DIR / "reference.json").read_text())
    return SimpleNamespace(cfg=cfg, split=split, model=model, scores=scores,
                           ref_scores=ref_scores, reference=reference, model_cfg=model_cfg)


def _aligned(imported) -> tuple[np.ndarray, np.ndarray]:
    """Our row and column indices in the reference's order (query_metas, video_metas)."""
    split, ref = imported.split, imported.ref_scores
    assert sorted(map(str, ref["query_metas"])) == sorted(split.cap_ids)
    assert sorted(map(str, ref["video_metas"])) == sorted(split.video_ids)
    rows = np.array([split.cap_ids.index(str(c)) for c in ref["query_metas"]])
    cols = np.array([split.video_ids.index(str(v)) for v in ref["video_metas"]])
    return rows, cols


@needs_fixtures
@pytest.mark.parametrize("ours, theirs", [("clip", "out0"), ("frame", "out1"), ("score", "out2")])
def test_score_matrices_equal_the_reference(imported, ours, theirs):
    rows, cols = _aligned(imported)
    mine = imported.scores[ours][np.ix_(rows, cols)]
    assert mine.shape == imported.ref_scores[theirs].shape == (80, 16)
    delta = float(np.abs(mine - imported.ref_scores[theirs]).max())
    assert delta <= TOLERANCE, f"{ours} vs {theirs}: max |Δ| = {delta:.3g}"


@needs_fixtures
def test_fused_metrics_equal_the_reference(imported):
    result = evaluate_method(imported.model, imported.split,
                             query_chunk=imported.cfg.eval.query_chunk,
                             video_chunk=imported.cfg.eval.video_chunk)
    got = result.metrics("score")
    want = imported.reference["reference_test_metrics"]
    # the reference prints R@K and meanr rounded to 2 decimals, mAP to 4
    for ours, theirs, digits in (("R1", "R1", 2), ("R5", "R5", 2), ("R10", "R10", 2),
                                 ("R100", "R100", 2), ("SumR", "SumR", 2), ("MedR", "medr", 2),
                                 ("MeanR", "meanr", 2), ("mAP", "mAP", 4)):
        assert round(got[ours], digits) == pytest.approx(want[theirs]), ours
    # no ties, so the pessimistic rank is the reference's argsort rank
    assert all(result.metrics(k)["tied_queries"] == 0 for k in result.keys)
    branch_sumr = [result.metrics(k)["SumR"] for k in ("clip", "frame", "score")]
    assert branch_sumr == pytest.approx(imported.reference["reference_test_all_branch_sumr"])
    # ranking the reference's own fused matrix gives our ranks query for query
    rows, cols = _aligned(imported)
    theirs = np.empty_like(imported.ref_scores["out2"])
    theirs[np.ix_(rows, cols)] = imported.ref_scores["out2"]
    from_reference = evaluate(theirs, imported.split.query_video)
    assert np.array_equal(from_reference.rank, result.rank)


@needs_fixtures
def test_reference_config_is_read(imported):
    method = imported.cfg.method
    cfg = imported.model_cfg
    assert (method.hidden_size, method.num_heads) == (cfg["hidden_size"], cfg["n_heads"])
    assert (method.input_dropout, method.dropout) == (cfg["input_drop"], cfg["drop"])
    options = imported.reference["reference_options"]
    assert (method.clip_weight, method.frame_weight) == (options["clip_scale_w"],
                                                         options["frame_scale_w"])


@needs_fixtures
@pytest.mark.parametrize("other", ["dl-dkd", "dl-dkd++"])
def test_other_methods_checkpoints_are_not_recognised(other):
    path = REFERENCE / other / "model.ckpt"
    if not path.is_file():
        pytest.skip(f"reference checkpoint fixture absent: {path}")
    state_dict, model_cfg, _ = read_reference_checkpoint(path)
    assert not recognizes(state_dict)
    with pytest.raises(ReferenceImportError, match="missing .* key.*unexpected .* key"):
        convert(state_dict, model_cfg)
