"""kdc-net reconstruction (docs/methods.md §9.3): labelling, parameter counts, parity of
``kdc-net.base`` with ``dl-dkd++``, module wiring, KRD special cases, config validation,
preset and the variant list (every variant is built and trained in tests/test_registry.py)."""
from __future__ import annotations

import dataclasses
import json
from importlib import resources

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import load_config
from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import FeatureDims, Progress
from benchmark.overrides import ConfigError, apply_overrides, flatten, to_jsonable
from benchmark.registry import get_method, list_methods
from methods.dl_dkd import DLDKDConfig
from methods.kdc_net import KDC_NET_CONFIG, RECONSTRUCTION_NOTE, KDCNet
from methods.layers.attention import SelfAttentionLayer
from methods.layers.dta import DynamicTemporalAttention
from methods.layers.hsa import HSA
from methods.losses.krd import refine_target, window_sizes
from methods.teacher import positive_teacher_frame_cosines

DIMS = FeatureDims(query=12, video=20, teacher=8, max_frames=16, max_query_tokens=8)
SMALL = {"hidden_size": 16, "num_heads": 4}
VARIANTS = sorted(m.name for m in list_methods() if m.base == "kdc-net")



def progress(epoch=0):
    return Progress(epoch=epoch, num_epochs=120, step=0, steps_per_epoch=1)


def make_batch(seed=0, counts=(3, 2, 2, 1, 1), T=9, L=6) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    B = len(counts)
    qv = torch.repeat_interleave(torch.arange(B), torch.tensor(counts))
    nq = len(qv)
    lengths = torch.tensor([T, 6, 3, 1, 8])[:B]
    frame_mask = (torch.arange(T)[None] < lengths[:, None]).float()
    tok_len = torch.randint(2, L + 1, (nq,), generator=g)
    token_mask = (torch.arange(L)[None] < tok_len[:, None]).float()
    frames = F.normalize(torch.randn(B, T, DIMS.video, generator=g), dim=-1) * frame_mask[..., None]
    tokens = F.normalize(torch.randn(nq, L, DIMS.query, generator=g), dim=-1) * token_mask[..., None]
    c = torch.randn(nq, DIMS.teacher, generator=g) * 3
    G = torch.randn(B, T, DIMS.teacher, generator=g) * 2 * frame_mask[..., None]
    return TrainBatch(QueryBatch(tokens, token_mask, c), VideoBatch(frames, frame_mask, None, G), qv)


def build(name="kdc-net", seed=0, **overrides):
    entry = get_method(name)
    torch.manual_seed(seed)
    return entry.cls(apply_overrides(entry.default_config, {**SMALL, **overrides}), DIMS)


# -- labelling ------------------------------------------------------------------------------------

def test_every_kdc_net_entry_is_tagged_as_a_reconstruction():
    assert "kdc-net" in VARIANTS and len(VARIANTS) > 20
    for name in VARIANTS:
        entry = get_method(name)
        assert entry.reconstruction, name
        assert entry.cls is KDCNet
        assert entry.cls.requirements(entry.default_config) >= {"teacher"}, name
    assert "RECONSTRUCTION" in get_method("kdc-net").summary


def test_card_carries_the_note_and_documents_every_knob():
    card = (resources.files("methods") / "cards" / "kdc-net.md").read_text()
    assert RECONSTRUCTION_NOTE in card.replace("\n> ", " ").replace("**", "")
    knobs = [k for k in flatten(KDC_NET_CONFIG) if k.split(".")[0] in ("hsa", "dta", "krd")]
    knobs.append("gate_lr_multiplier")
    for knob in knobs:
        # a schedule inside a section (krd.lam_ramp.kind, ...) is documented as a whole
        section = knob.rsplit(".", 1)[0] + ".*" if knob.count(".") >= 2 else knob
        assert f"`{knob}`" in card or f"`{section}`" in card, knob


# -- architecture ---------------------------------------------------------------------------------

@pytest.mark.parametrize("d_q, d_v, expected, legacy, base", [
    (768, 3072, 7_533_088, 8_122_912, 5_755_392), (1024, 1024, 6_149_664, 6_739_488, 4_371_968)])
def test_parameter_counts(d_q, d_v, expected, legacy, base):
    dims = FeatureDims(query=d_q, video=d_v, teacher=512)
    count = lambda name: sum(p.numel() for p in get_method(name).cls(  # noqa: E731
        get_method(name).default_config, dims).parameters())
    assert count("kdc-net") == expected                 # §9.3.4 totals
    assert count("kdc-net.legacy") == legacy            # gated HSA: + 2D² per branch
    assert count("kdc-net.base") == count("dl-dkd++") == base
    assert count("kdc-net.no-dta") == base + 2 * 887_808
    assert count("kdc-net.no-hsa") == base + 2 * 1_040


def test_switched_off_modules_are_not_built():
    base = build("kdc-net.base")
    ref = build("dl-dkd++")
    assert list(base.state_dict()) == list(ref.state_dict())
    for name in ("inherit", "explore"):
        assert not hasattr(base.branches[name], "hsa")
        assert type(base.branches[name].video.encoder) is SelfAttentionLayer
    full = build("kdc-net")
    for name in ("inherit", "explore"):
        assert isinstance(full.branches[name].hsa, HSA)
        assert isinstance(full.branches[name].video.encoder, DynamicTemporalAttention)
    half = build("kdc-net", **{"hsa.branches": "inherit", "dta.branches": "inherit"})
    assert hasattr(half.branches["inherit"], "hsa") and not hasattr(half.branches["explore"], "hsa")
    assert type(half.branches["explore"].video.encoder) is SelfAttentionLayer


# -- parity with dl-dkd++ -------------------------------------------------------------------------

def test_base_equals_dl_dkd_pp_for_the_same_seed_and_batch():
    base, ref = build("kdc-net.base", seed=3), build("dl-dkd++", seed=3)
    for (k1, v1), (k2, v2) in zip(base.state_dict().items(), ref.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    batch = make_batch(1)
    for epoch in (0, 7):
        torch.manual_seed(11)
        got = base.compute_loss(batch, progress(epoch))
        torch.manual_seed(11)
        want = ref.compute_loss(batch, progress(epoch))
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), (epoch, key)
        got["loss"].backward()
        want["loss"].backward()
        for (k1, p1), (_, p2) in zip(base.named_parameters(), ref.named_parameters()):
            assert (p1.grad is None) == (p2.grad is None), k1
            assert p1.grad is None or torch.equal(p1.grad, p2.grad), k1
    base.eval(), ref.eval()
    with torch.no_grad():
        s1 = base.score(base.encode_queries(batch.queries), base.encode_videos(batch.videos))
        s2 = ref.score(ref.encode_queries(batch.queries), ref.encode_videos(batch.videos))
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


# -- module wiring --------------------------------------------------------------------------------

def test_hsa_replaces_the_query_vector_and_a_closed_gate_restores_it():
    model = build("kdc-net.hsa-only", **{"hsa.fusion": "gate"}).eval()
    queries = make_batch().queries
    branch = model.branches["inherit"]
    with torch.no_grad():
        states = branch.query.token_states(queries.tokens, queries.mask)
        sentence = branch.query.pool(states, queries.mask)
        got = model._query_vector("inherit", queries.tokens, queries.mask)
        assert torch.allclose(got, branch.hsa(states, queries.mask, sentence))
        assert not torch.allclose(got, sentence, atol=1e-4)
        branch.hsa.gate.weight.zero_()
        branch.hsa.gate.bias.fill_(-100.0)                 # z = 0: q = q̄
        assert torch.allclose(model._query_vector("inherit", queries.tokens, queries.mask), sentence)


def test_krd_target_is_refine_target_of_the_teacher_cosines():
    model = build("kdc-net")
    batch = make_batch()
    mask = batch.videos.frame_mask[batch.query_video]
    teacher = positive_teacher_frame_cosines(batch.queries.teacher, batch.videos.teacher_frames,
                                             batch.videos.frame_mask, batch.query_video)
    got = model._kd_target(teacher, teacher, mask, progress(20))            # ramp finished: λ = 0.5
    window = window_sizes(mask, 1, 0.05)
    assert torch.equal(got, refine_target(teacher, mask, window=window, delta=0.2, lam=0.5,
                                          temperature=0.2))
    assert build("kdc-net.no-krd")._kd_target(teacher, teacher, mask, progress()) is None
    fixed = build("kdc-net.krd-fixed-window")._kd_target(teacher, teacher, mask, progress(20))
    assert torch.equal(fixed, refine_target(teacher, mask, window=5, delta=0.2, lam=0.5,
                                            temperature=0.2))


def test_krd_lambda_ramps_from_zero_on_the_schedule():
    model = build("kdc-net")
    batch = make_batch()
    mask = batch.videos.frame_mask[batch.query_video]
    teacher = positive_teacher_frame_cosines(batch.queries.teacher, batch.videos.teacher_frames,
                                             batch.videos.frame_mask, batch.query_video)
    raw = refine_target(teacher, mask, window=1, delta=0.2, lam=0.0, temperature=0.2)
    assert torch.equal(model._kd_target(teacher, teacher, mask, progress(0)), raw)   # DL-DKD++'s
    # rising-linear: λ = 0.5 · min(e/10, 1)
    k = model.config.krd
    assert [k.lam_at(progress(e)) for e in (0, 1, 5, 10, 50)] == pytest.approx([0, .05, .25, .5, .5])
    assert get_method("kdc-net.krd-no-ramp").default_config.krd.lam_at(progress(0)) == 0.5
    # on the progress clock the ramp follows t = p·E_ref: an 11-epoch run of 11 steps per epoch
    # (last step 120) at step 6 with E_ref 120 reads t = 6, so λ = 0.5 · 0.6
    clocked = Progress(epoch=0, num_epochs=11, step=6, steps_per_epoch=11, clock="progress",
                       reference_epochs=120)
    assert k.lam_at(clocked) == pytest.approx(0.5 * 0.6)
    out = model.compute_loss(batch, progress(5))
    assert out["krd_lam"].item() == pytest.approx(0.25)
    half = model._kd_target(teacher, teacher, mask, progress(5))
    full = refine_target(teacher, mask, window=window_sizes(mask, 1, 0.05), delta=0.2, lam=1.0,
                         temperature=0.2)
    assert torch.allclose(half, 0.25 * full + 0.75 * raw, atol=1e-7)


@pytest.mark.parametrize("settings", [{"krd.lam": 0.0},
                                      {"krd.window": 1, "krd.window_fraction": 0.0,
                                       "krd.delta": 1.0, "krd.lam": 1.0}])
def test_krd_special_cases_reproduce_the_dl_dkd_pp_kd_term(settings):
    batch = make_batch(2)
    late = progress(30)                                   # past the λ ramp
    torch.manual_seed(5)
    plain = build("kdc-net.krd-only", seed=4, **{"krd.enabled": False}).compute_loss(batch, late)
    torch.manual_seed(5)
    special = build("kdc-net.krd-only", seed=4, **settings).compute_loss(batch, late)
    torch.manual_seed(5)
    refined = build("kdc-net.krd-only", seed=4).compute_loss(batch, late)
    assert torch.allclose(special["loss_kd"], plain["loss_kd"], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(refined["loss_kd"], plain["loss_kd"], rtol=1e-3)
    for key in ("loss_inherit_triplet", "loss_inherit_nce", "loss_explore_nce"):
        assert torch.equal(refined[key], plain[key]), key       # KRD touches the KD target only


def test_scores_are_separable_over_video_chunks():
    model = build("kdc-net").eval()
    batch = make_batch(3)
    with torch.no_grad():
        q = model.encode_queries(batch.queries)
        full = model.score(q, model.encode_videos(batch.videos))["score"]
        parts = []
        for idx in (torch.tensor([0, 1]), torch.tensor([2, 3, 4])):
            v = batch.videos
            sub = VideoBatch(v.frames[idx], v.frame_mask[idx], None, None)
            parts.append(model.score(q, model.encode_videos(sub))["score"])
    assert torch.allclose(full, torch.cat(parts, dim=1), atol=1e-6)


# -- config ---------------------------------------------------------------------------------------

def test_registered_default_inherits_every_dl_dkd_pp_value():
    pp = get_method("dl-dkd++").default_config
    for f in dataclasses.fields(DLDKDConfig):
        assert getattr(KDC_NET_CONFIG, f.name) == getattr(pp, f.name), f.name
    assert KDC_NET_CONFIG.krd.lam == 0.5 and KDC_NET_CONFIG.krd.window == 1
    assert KDC_NET_CONFIG.krd.window_fraction == 0.05 and KDC_NET_CONFIG.krd.lam_ramp.kind == "rising-linear"
    assert KDC_NET_CONFIG.hsa.fusion == "residual" and KDC_NET_CONFIG.dta.gamma_form == "tanh"
    assert KDC_NET_CONFIG.dta.gamma0 == 0.0 and KDC_NET_CONFIG.gate_lr_multiplier == 10.0
    assert KDC_NET_CONFIG.hsa.kernels == (1, 2, 3) and KDC_NET_CONFIG.dta.rel_pos_max == 32


@pytest.mark.parametrize("key, value, match", [
    ("krd.window", 4, "krd.window"), ("krd.window", 0, "krd.window"), ("krd.delta", 1.5, "krd.delta"),
    ("krd.lam", -0.1, "krd.lam"), ("dta.gamma0", 1.0, "dta.gamma0"), ("dta.gamma0", -0.1, "dta.gamma0"),
    ("hsa.kernels", (2, 2), "hsa.kernels"), ("krd.lambda", 0.5, "krd.lambda"),
    ("krd.window_fraction", 1.5, "krd.window_fraction"), ("dta.gamma_form", "relu", "dta.gamma_form"),
    ("hsa.fusion", "sum", "hsa.fusion"), ("gate_lr_multiplier", 0.0, "gate_lr_multiplier"),
    ("krd.lam_ramp.kind", "upwards", "krd.lam_ramp.kind")])
def test_bad_knobs_raise_config_errors_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(KDC_NET_CONFIG, {key: value})


def test_sigmoid_gate_rejects_gamma0_zero():
    with pytest.raises(ConfigError, match="dta.gamma0"):
        apply_overrides(KDC_NET_CONFIG, {"dta.gamma_form": "sigmoid", "dta.gamma0": 0.0})


def test_fixed_gamma_allows_the_endpoints_and_strings_parse():
    cfg = apply_overrides(KDC_NET_CONFIG, {"dta.learn_gamma": "false", "dta.gamma0": "1.0",
                                           "hsa.kernels": "1,2", "krd.window": "7"})
    assert cfg.dta.gamma0 == 1.0 and cfg.hsa.kernels == (1, 2) and cfg.krd.window == 7


def test_config_json_round_trip():
    cfg = get_method("kdc-net.krd-delta0.1").default_config
    text = json.dumps(to_jsonable(cfg))
    assert apply_overrides(KDC_NET_CONFIG, json.loads(text)) == cfg
    assert cfg.krd.delta == 0.1


@pytest.mark.parametrize("collection", ["tvr", "activitynet", "charades"])
def test_preset_is_dl_dkd_pp_recipe(collection):
    mine, ref = load_config("kdc-net", collection), load_config("dl-dkd++", collection)
    for section in ("data", "train", "optim", "eval", "seed"):
        assert getattr(mine, section) == getattr(ref, section), section
    for f in dataclasses.fields(DLDKDConfig):
        assert getattr(mine.method, f.name) == getattr(ref.method, f.name), f.name
    assert (mine.method.hsa, mine.method.dta, mine.method.krd) == (
        KDC_NET_CONFIG.hsa, KDC_NET_CONFIG.dta, KDC_NET_CONFIG.krd)


def test_weight_decay_split_of_the_new_parameters_is_as_the_card_says():
    from benchmark.training.optim import no_decay_names

    model = build("kdc-net")
    skip = no_decay_names(model)
    new = {n for n, _ in model.named_parameters() if ".hsa." in n or any(
        part in n for part in ("rel_bias", "centre_", "width_", "gamma_logit"))}
    no_decay = {n for n in new if n in skip}
    assert no_decay == {n for n in new if n.endswith(("rel_bias", "centre_bias", "width_bias",
                                                      "gamma_logit", "residual_gate"))
                        or (".hsa.convs." in n and n.endswith(".bias"))}
    # ρ by DTA's explicit no_weight_decay_parameters list (its name has no "bias"), both branches
    assert {"branches.inherit.video.encoder.gamma_logit",
            "branches.explore.video.encoder.gamma_logit"} <= skip
    assert "branches.inherit.video.encoder.centre_weight" in new - skip


# -- identity at initialisation (issue 13) ---------------------------------------------------------

#: names of the parameters each module adds to a dl-dkd++ branch (per branch, at the defaults)
NEW_PARAMETERS = {"hsa": "hsa.", "dta": ("rel_bias", "centre_", "width_", "gamma_logit")}


def _on_dl_dkd_pp_weights(name, seed=7):
    """``name`` built with its own random draws, then given dl-dkd++'s weights for every
    parameter the two share. The new modules keep their own initial values (random convolutions,
    pooling, windows): only their closed gates can make the outputs agree."""
    ref, model = build("dl-dkd++", seed=seed), build(name, seed=seed + 1)
    missing, unexpected = model.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected
    new = {n for n, _ in model.named_parameters() if ".hsa." in n or any(
        part in n for part in NEW_PARAMETERS["dta"])}
    assert set(missing) == new
    return ref, model, new


def _scores(model, batch):
    model.eval()
    with torch.no_grad():
        return model.score(model.encode_queries(batch.queries), model.encode_videos(batch.videos))


@pytest.mark.parametrize("name", ["kdc-net.hsa-only", "kdc-net.dta-only", "kdc-net.krd-only", "kdc-net"])
def test_untrained_modules_are_the_identity(name):
    ref, model, new = _on_dl_dkd_pp_weights(name)
    assert bool(new) == (name != "kdc-net.krd-only")
    batch = make_batch(4)
    got, want = _scores(model, batch), _scores(ref, batch)
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst <= 1e-6, worst
    # the training loss at the start too (same dropout draws; KRD's λ is 0 at step 0)
    ref.train(), model.train()
    torch.manual_seed(3)
    out = model.compute_loss(batch, progress(0))
    torch.manual_seed(3)
    base = ref.compute_loss(batch, progress(0))
    for key in base:
        assert torch.allclose(out[key], base[key], rtol=0, atol=1e-6), key


@pytest.mark.parametrize("name, opened", [
    ("kdc-net.hsa-only", "residual_gate"), ("kdc-net.dta-only", "gamma_logit"),
    ("kdc-net.legacy", None)])
def test_the_comparison_can_fail(name, opened):
    # the same construction with the gate opened (or the first reconstruction's forms) does
    # change the scores, so the identity above is the gates' doing
    ref, model, _ = _on_dl_dkd_pp_weights(name)
    if opened:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith(opened):
                    p.fill_(0.5)
    batch = make_batch(4)
    got, want = _scores(model, batch), _scores(ref, batch)
    assert (got["score"] - want["score"]).abs().max() > 1e-5           # 10× the tolerance


def test_gates_learn_from_the_first_step_in_their_own_optimiser_group():
    from benchmark.config import OptimConfig
    from benchmark.training.optim import build_optimizer

    model = build("kdc-net")
    model.compute_loss(make_batch(1), progress(0))["loss"].backward()
    gates = {n: p for n, p in model.named_parameters() if n.endswith(("residual_gate", "gamma_logit"))}
    assert len(gates) == 4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gates.values())
    opt = build_optimizer(model, OptimConfig(), t_total=0)      # constant lr: the first step moves
    (group,) = [g for g in opt.param_groups if g.get("lr_scale", 1.0) != 1.0]
    assert group["lr_scale"] == 10.0 and group["weight_decay"] == 0.0
    assert {id(p) for p in group["params"]} == {id(p) for p in gates.values()}
    before = {n: p.detach().clone() for n, p in gates.items()}
    opt.step()
    assert all(not torch.equal(gates[n], before[n]) for n in gates)
    ref = build_optimizer(build("dl-dkd++"), OptimConfig(), t_total=10)
    assert len(ref.param_groups) == 2 and all(g["lr_scale"] == 1.0 for g in ref.param_groups)


def test_closed_gate_bias_is_set_after_the_reference_init():
    model = build("kdc-net.hsa-closed-gate")
    for name in ("inherit", "explore"):
        assert torch.equal(model.branches[name].hsa.gate.bias, torch.full((16,), -4.0))
