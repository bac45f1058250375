"""DL-DKD / DL-DKD++ reference checkpoint importers (methods/dl_dkd_reference.py).

The exactness tests load the authors' own checkpoints from ../shared/data/reference-checkpoints
(README there) and compare our score matrices with the reference's test inference. The key
mapping tests build reference-named state dicts from our own models and need no fixtures.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._utils

from benchmark.config import load_config
from benchmark.data.split import load_split
from benchmark.evaluate import evaluate_method
from benchmark.interface import FeatureDims
from benchmark.overrides import apply_overrides
from benchmark.reference import load_reference_checkpoint
from benchmark.registry import (
    ReferenceImportError,
    find_reference_importer,
    get_method,
    get_reference_importer,
)
from methods.dl_dkd_reference import ICCV_TABLE, JOURNAL_TABLE, _ref_keys

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "data" / "reference-checkpoints"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(),
                                    reason=f"reference checkpoint fixtures absent ({FIXTURES})")

#: test_scores.npz arrays -> our score keys, and the reference's fused weights of out0, out1
#: (its code keeps no fused matrix; README of the fixtures).
OUTPUTS = {"dl-dkd": ({"out0": "explore", "out1": "inherit"}, (0.3, 0.7)),
           "dl-dkd++": ({"out0": "inherit", "out1": "explore"}, (0.7, 0.3))}


# -- reading a reference checkpoint: the core's allow-list reader -----------------------------

def read_reference_checkpoint(path) -> dict:
    """``{"model": state_dict, "model_cfg": dict, "epoch": int | None}`` of a reference file."""
    ref = load_reference_checkpoint(path)
    return {"model": ref.state_dict, "model_cfg": ref.model_cfg, "epoch": ref.epoch}


# -- key mapping on state dicts named like the reference's ------------------------------------

DIMS = FeatureDims(query=12, video=20, max_frames=16, max_query_tokens=8)


def our_model(base: str, **overrides):
    entry = get_method(base)
    return entry.cls(apply_overrides(entry.default_config, {"hidden_size": 16, "num_heads": 4,
                                                            **overrides}), DIMS)


def as_reference(base: str, state_dict: dict) -> dict:
    """Our state dict under the reference code's names (the inverse of the importer's table)."""
    table = ICCV_TABLE if base == "dl-dkd" else JOURNAL_TABLE
    branches = tuple(b for b in ("inherit", "explore") if f"branches.{b}.output.weight" in state_dict)
    inverse = {ours: ref for ref, ours in _ref_keys(table, branches).items()}
    assert set(inverse) == set(state_dict)
    return {inverse[k]: v for k, v in state_dict.items()}


ICCV_CFG = {"visual_input_size": 20, "query_input_size": 12, "A_hidden_size": 16,
            "B_hidden_size": 16, "max_ctx_l": 16, "max_desc_l": 8, "map_size": 32,
            "input_drop": 0.1, "device": [0], "drop": 0.1, "n_heads": 4,
            "initializer_range": 0.02, "margin": 0.1, "use_hard_negative": True,
            "hard_pool_size": 20}
JOURNAL_CFG = {"visual_input_size": 20, "query_input_size": 12, "inheritance_hidden": 16,
               "exploration_hidden": 16, "max_ctx_l": 16, "max_desc_l": 8, "input_drop": 0.2,
               "device": [0], "drop": 0.2, "n_heads": 4, "initializer_range": 0.02,
               "margin": 0.1, "use_hard_negative": True, "hard_pool_size": 20,
               "label_style": "soft"}
CFGS = {"dl-dkd": ICCV_CFG, "dl-dkd++": JOURNAL_CFG}


def test_reference_names_are_the_published_ones():
    iccv = as_reference("dl-dkd", our_model("dl-dkd").state_dict())
    journal = as_reference("dl-dkd++", our_model("dl-dkd++").state_dict())
    assert {"A_query_input_proj.net.1.weight", "B_frame_encoder.self.query.weight",
            "B_frame_encoder.output.dense.bias", "A_frame_encoder.output.LayerNorm.weight",
            "B_modular_vector_mapping.weight", "A_mapping_linear.bias",
            "B_query_pos_embed.position_embeddings.weight"} <= set(iccv)
    assert {"query_input_proj.net.1.weight", "visual_encoder.self.key.bias",
            "exp_visual_encoder.output.dense.weight", "out_mapping_linear.weight",
            "exp_out_mapping_linear.bias", "exp_modular_vector_mapping.weight",
            "exp_visual_pos_embed.LayerNorm.bias"} <= set(journal)
    assert len(iccv) == len(journal) == 74


@pytest.mark.parametrize("base", ["dl-dkd", "dl-dkd++"])
def test_round_trip_and_overrides(base):
    ours = our_model(base).state_dict()
    importer = get_reference_importer(base)
    reference = as_reference(base, ours)
    assert importer.recognizes(reference)
    assert find_reference_importer(reference).base == base
    overrides, converted = importer.convert(reference, CFGS[base])
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[k], value) for k, value in ours.items())
    expected = {"hidden_size": 16, "num_heads": 4, "margin": 0.1, "hard_pool_size": 20,
                "double_branch": True}
    if base == "dl-dkd":
        expected |= {"dropout": 0.1, "input_dropout": 0.1, "separate_query_projection": False}
    else:
        expected |= {"dropout": 0.2, "input_dropout": 0.2, "separate_query_projection": True,
                     "label_style": "soft"}
    assert overrides == {f"method.{k}": v for k, v in expected.items()}
    fields = {k.removeprefix("method."): v for k, v in overrides.items()}
    model = get_method(base).cls(apply_overrides(get_method(base).default_config, fields), DIMS)
    model.load_state_dict(converted, strict=True)


def test_the_two_importers_tell_the_codes_apart():
    iccv = as_reference("dl-dkd", our_model("dl-dkd").state_dict())
    journal = as_reference("dl-dkd++", our_model("dl-dkd++").state_dict())
    assert not get_reference_importer("dl-dkd++").recognizes(iccv)
    assert not get_reference_importer("dl-dkd").recognizes(journal)
    # an MS-SL reference state dict shares query_* and modular_vector_mapping with the journal code
    ms_sl = {f"{m}.weight": torch.zeros(1) for m in (
        "query_pos_embed", "query_input_proj", "query_encoder", "modular_vector_mapping",
        "clip_pos_embed", "clip_input_proj", "clip_encoder", "frame_input_proj",
        "frame_encoder", "frame_pos_embed", "mapping_linear")}
    assert not get_reference_importer("dl-dkd").recognizes(ms_sl)
    assert not get_reference_importer("dl-dkd++").recognizes(ms_sl)


@pytest.mark.parametrize("base", ["dl-dkd", "dl-dkd++"])
def test_leftover_keys_are_named(base):
    importer = get_reference_importer(base)
    reference = as_reference(base, our_model(base).state_dict())
    extra = dict(reference, **{"B_frame_encoder.intermediate.dense.weight": torch.zeros(2)})
    with pytest.raises(ReferenceImportError, match=r"unexpected 1 key\(s\): B_frame_encoder\.intermediate"):
        importer.convert(extra, CFGS[base])
    gone = next(k for k in reference if "mapping_linear.bias" in k)
    missing = {k: v for k, v in reference.items() if k != gone}
    with pytest.raises(ReferenceImportError, match=f"missing 1 key\\(s\\): {gone}"):
        importer.convert(missing, CFGS[base])


def test_single_branch_checkpoints():
    inherit_only = as_reference("dl-dkd", our_model("dl-dkd", double_branch=False).state_dict())
    assert all(k.startswith("B_") for k in inherit_only)
    overrides, _ = get_reference_importer("dl-dkd").convert(inherit_only, ICCV_CFG)
    assert (overrides["method.double_branch"], overrides["method.single_branch"]) == (False, "inherit")
    # the ICCV exploration branch cannot stand alone: it encodes queries with B's projection
    explore_only = {k: v for k, v in as_reference("dl-dkd", our_model("dl-dkd").state_dict()).items()
                    if k.startswith("A_")}
    with pytest.raises(ReferenceImportError, match=r"missing \d+ key\(s\): B_"):
        get_reference_importer("dl-dkd").convert(explore_only, ICCV_CFG)
    journal = as_reference("dl-dkd++", our_model("dl-dkd++", double_branch=False,
                                                 single_branch="explore").state_dict())
    overrides, _ = get_reference_importer("dl-dkd++").convert(journal, JOURNAL_CFG)
    assert (overrides["method.double_branch"], overrides["method.single_branch"]) == (False, "explore")


@pytest.mark.parametrize("key, value, message", [
    ("B_hidden_size", 32, "B_hidden_size=32 but the tensors have hidden size 16"),
    ("query_input_size", 10, "query_input_size=10 but the input projection takes 12"),
    ("n_heads", None, "no n_heads"),
])
def test_config_that_contradicts_the_tensors(key, value, message):
    reference = as_reference("dl-dkd", our_model("dl-dkd").state_dict())
    cfg = {k: v for k, v in ICCV_CFG.items() if k != key}
    if value is not None:
        cfg[key] = value
    with pytest.raises(ReferenceImportError, match=message):
        get_reference_importer("dl-dkd").convert(reference, cfg)


# -- exactness against the reference's own test inference -------------------------------------

@needs_fixtures
def test_fixtures_are_recognised_by_their_importer():
    for base in OUTPUTS:
        state = read_reference_checkpoint(FIXTURES / base / "model.ckpt")["model"]
        assert find_reference_importer(state).base == base
    ms_sl = read_reference_checkpoint(FIXTURES / "ms-sl" / "model.ckpt")["model"]
    assert not any(get_reference_importer(b).recognizes(ms_sl) for b in OUTPUTS)


def _imported(base: str):
    ckpt = read_reference_checkpoint(FIXTURES / base / "model.ckpt")
    overrides, state = get_reference_importer(base).convert(ckpt["model"], ckpt["model_cfg"])
    cfg = load_config(base, "synref", data_root=FIXTURES / "data",
                      overrides={"data.visual_feature": "i3d_ref", **overrides})
    split = load_split(FIXTURES / "data", "synref", "test", visual_feature="i3d_ref",
                       max_frames=cfg.data.max_frames, max_query_tokens=cfg.data.max_query_tokens)
    model = get_method(base).cls(cfg.method, split.dims)
    model.load_state_dict(state, strict=True)
    return model.eval(), split


@needs_fixtures
@pytest.mark.parametrize("base", ["dl-dkd", "dl-dkd++"])
def test_scores_equal_the_reference_test_inference(base):
    model, split = _imported(base)
    with torch.no_grad():
        out = model.score(model.encode_queries(split.query_batch(np.arange(split.num_queries))),
                          model.encode_videos(split.video_batch(np.arange(split.num_videos))))
    ref = np.load(FIXTURES / base / "test_scores.npz")
    rows = [split.cap_ids.index(c) for c in ref["query_metas"]]
    cols = [split.video_ids.index(v) for v in ref["video_metas"]]
    names, (w0, w1) = OUTPUTS[base]
    expected = {names["out0"]: ref["out0"], names["out1"]: ref["out1"],
                "score": w0 * ref["out0"] + w1 * ref["out1"]}
    assert set(out) == set(expected)
    for key, matrix in expected.items():
        ours = out[key].numpy()[np.ix_(rows, cols)]
        assert ours.shape == (80, 16)
        assert np.abs(ours - matrix).max() <= 1e-5, key


@needs_fixtures
@pytest.mark.parametrize("base", ["dl-dkd", "dl-dkd++"])
def test_metrics_equal_the_reference(base):
    model, split = _imported(base)
    result = evaluate_method(model, split)
    reference = json.loads((FIXTURES / base / "reference.json").read_text())
    ref = reference["reference_test_metrics"]
    ours = result.metrics()
    assert ours["tied_queries"] == 0
    for name in ("R1", "R5", "R10", "R100", "SumR"):
        assert ours[name] == pytest.approx(ref[name], abs=1e-9), name
    assert ours["MedR"] == ref["medr"]
    # the reference prints meanr to 2 and mAP to 4 decimals
    assert abs(ours["MeanR"] - ref["meanr"]) <= 0.005 + 1e-12
    assert abs(ours["mAP"] - ref["mAP"]) <= 0.00005 + 1e-12
    # SumR of every matrix the reference evaluated, in its order: out0, out1, fused
    names, _ = OUTPUTS[base]
    sumr = [result.metrics(names["out0"])["SumR"], result.metrics(names["out1"])["SumR"],
            ours["SumR"]]
    assert sumr == pytest.approx(reference["reference_test_all_branch_sumr"], abs=1e-9)
