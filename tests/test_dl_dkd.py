"""DL-DKD / DL-DKD++ (docs/methods.md §5, §6): teacher scores, parameter counts, scoring,
training terms, gradient routing and the variant list (every variant is built and trained in
tests/test_registry.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import FeatureDims, Progress
from benchmark.overrides import apply_overrides
from benchmark.registry import get_method, list_methods
from methods.dl_dkd import DLDKD, DLDKDConfig, max_over_frames
from methods.losses.distill import frame_kd_loss
from methods.teacher import (
    TeacherMissingError,
    TeacherShapeError,
    positive_teacher_frame_cosines,
    require_teacher,
    teacher_frame_cosines,
    teacher_video_scores,
)

DIMS = FeatureDims(query=12, video=20, teacher=8, max_frames=16, max_query_tokens=8)
SMALL = {"hidden_size": 16, "num_heads": 4}


def progress(epoch=0, num_epochs=120):
    return Progress(epoch=epoch, num_epochs=num_epochs, step=0, steps_per_epoch=1)


def make_batch(seed=0, counts=(3, 2, 2, 1, 1), T=7, L=6, dims=DIMS, teacher=True) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    B = len(counts)
    qv = torch.repeat_interleave(torch.arange(B), torch.tensor(counts))
    nq = len(qv)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    lengths[0] = T
    frame_mask = (torch.arange(T)[None] < lengths[:, None]).float()
    tok_len = torch.randint(2, L + 1, (nq,), generator=g)
    token_mask = (torch.arange(L)[None] < tok_len[:, None]).float()
    frames = F.normalize(torch.randn(B, T, dims.video, generator=g), dim=-1) * frame_mask[..., None]
    tokens = F.normalize(torch.randn(nq, L, dims.query, generator=g), dim=-1) * token_mask[..., None]
    c = G = None
    if teacher:
        c = torch.randn(nq, dims.teacher, generator=g) * 3
        G = torch.randn(B, T, dims.teacher, generator=g) * 2 * frame_mask[..., None]
    return TrainBatch(QueryBatch(tokens, token_mask, c), VideoBatch(frames, frame_mask, None, G), qv)


def build(name="dl-dkd", dims=DIMS, **overrides) -> DLDKD:
    entry = get_method(name)
    config = apply_overrides(entry.default_config, {**SMALL, **overrides})
    return entry.cls(config, dims)


# -- teacher -------------------------------------------------------------------------------------

def test_teacher_scores_against_loops():
    b = make_batch(1)
    c, G, mask = b.queries.teacher, b.videos.teacher_frames, b.videos.frame_mask
    cos = teacher_frame_cosines(c, G, mask)
    raw = teacher_video_scores(c, G, mask)
    cosv = teacher_video_scores(c, G, mask, kind="cosine")
    pos = positive_teacher_frame_cosines(c, G, mask, b.query_video)
    for i in range(c.shape[0]):
        for v in range(G.shape[0]):
            n = int(mask[v].sum())
            expect = [float(torch.dot(c[i], G[v, t]) / (c[i].norm() * G[v, t].norm())) for t in range(n)]
            assert cos[i, v, :n].tolist() == pytest.approx(expect, rel=1e-5, abs=1e-6)
            assert torch.all(cos[i, v, n:] == -1e10)
            assert raw[i, v].item() == pytest.approx(max(float(torch.dot(c[i], G[v, t])) for t in range(n)),
                                                     rel=1e-5)
            assert cosv[i, v].item() == pytest.approx(max(expect), rel=1e-5)
        assert torch.allclose(pos[i], cos[i, b.query_video[i]], atol=1e-6)
    with pytest.raises(ValueError, match="raw_dot"):
        teacher_video_scores(c, G, mask, kind="dot")  # type: ignore[arg-type]


def test_raw_teacher_scores_depend_on_feature_norms():
    b = make_batch(2)
    c, G, mask = b.queries.teacher, b.videos.teacher_frames, b.videos.frame_mask
    assert torch.allclose(teacher_video_scores(2 * c, G, mask), 2 * teacher_video_scores(c, G, mask))
    assert torch.allclose(teacher_video_scores(2 * c, G, mask, kind="cosine"),
                          teacher_video_scores(c, G, mask, kind="cosine"))


def test_missing_or_misaligned_teacher_is_a_clear_error():
    b = make_batch(3, teacher=False)
    missing = "DLDKD.*QueryBatch.teacher and no VideoBatch.teacher_frames"
    with pytest.raises(TeacherMissingError, match=missing):
        build("dl-dkd").compute_loss(b, progress())
    good = make_batch(3)
    bad = TrainBatch(good.queries, VideoBatch(good.videos.frames, good.videos.frame_mask, None,
                                              good.videos.teacher_frames[:, :-1]), good.query_video)
    with pytest.raises(TeacherShapeError, match="teacher_frames"):
        require_teacher(bad, "dl-dkd")


# -- architecture ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dl-dkd", "dl-dkd++"])
@pytest.mark.parametrize("d_q, d_v, expected", [(768, 3072, 5_755_392), (1024, 1024, 4_371_968)])
def test_parameter_counts(name, d_q, d_v, expected):
    entry = get_method(name)
    model = entry.cls(entry.default_config, FeatureDims(query=d_q, video=d_v, teacher=512))
    assert sum(p.numel() for p in model.parameters()) == expected   # §5.2, incl. unused projection


def test_module_order_is_stable():
    model = build("dl-dkd")
    names = [n for n, _ in model.named_children()]
    assert names == ["branches"]
    assert list(model.branches) == ["inherit", "explore"]
    assert [n for n, _ in model.branches["inherit"].named_children()] == ["query", "video", "output"]
    assert list(build("dl-dkd.explore-only").branches) == ["explore"]


def test_dl_dkd_shares_the_query_projection():
    model = build("dl-dkd").eval()
    b = make_batch(4)
    before = model.encode_queries(b.queries).explore
    unused = model.branches["explore"].query.projection
    assert all(not p.requires_grad for p in unused.parameters())
    with torch.no_grad():
        for p in unused.parameters():
            p.add_(1.0)
    assert torch.equal(model.encode_queries(b.queries).explore, before)   # never used
    with torch.no_grad():
        model.branches["inherit"].query.projection.linear.weight.mul_(2.0)
    assert not torch.allclose(model.encode_queries(b.queries).explore, before)


def test_dl_dkd_pp_has_separate_projections():
    model = build("dl-dkd++").train()
    b = make_batch(5)
    model.compute_loss(b, progress())["loss"].backward()
    explore_proj = model.branches["explore"].query.projection.linear.weight
    assert explore_proj.requires_grad and explore_proj.grad.abs().sum() > 0


# -- scoring -------------------------------------------------------------------------------------

def test_score_definition_and_fusion():
    model = build("dl-dkd").eval()
    b = make_batch(6)
    with torch.no_grad():
        q, v = model.encode_queries(b.queries), model.encode_videos(b.videos)
        out = model.score(q, v)
        for name in ("inherit", "explore"):
            qn = F.normalize(model._query_vector(name, b.queries.tokens, b.queries.mask), dim=-1)
            fv = F.normalize(model._frame_features(name, b.videos.frames, b.videos.frame_mask), dim=-1)
            for i in range(qn.shape[0]):
                for j in range(fv.shape[0]):
                    n = int(b.videos.frame_mask[j].sum())
                    expect = (fv[j, :n] @ qn[i]).max()
                    assert out[name][i, j].item() == pytest.approx(expect.item(), abs=1e-6)
    assert torch.allclose(out["score"], 0.7 * out["inherit"] + 0.3 * out["explore"])
    for name, w in (("dl-dkd.fusion-inherit", 1.0), ("dl-dkd.fusion-explore", 0.0)):
        m = build(name).eval()
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            s = m.score(m.encode_queries(b.queries), m.encode_videos(b.videos))
        assert torch.equal(s["score"], s["inherit"] if w == 1.0 else s["explore"])
    single = build("dl-dkd.single-branch").eval()
    with torch.no_grad():
        s = single.score(single.encode_queries(b.queries), single.encode_videos(b.videos))
    assert set(s) == {"score", "inherit"} and torch.equal(s["score"], s["inherit"])


@pytest.mark.parametrize("name", ["dl-dkd", "dl-dkd++"])
def test_chunked_scoring_equals_unchunked(name):
    model = build(name).eval()
    tiny_blocks = build(name, score_block_elements=1).eval()
    tiny_blocks.load_state_dict(model.state_dict())
    b = make_batch(7, counts=(2, 1, 3, 1, 2, 2, 1))
    with torch.no_grad():
        q, v = model.encode_queries(b.queries), model.encode_videos(b.videos)
        full = model.score(q, v)
        blocked = tiny_blocks.score(q, v)
        # the evaluator's way: encode video chunks (different frame lengths), cat, score query chunks
        def chunk(s: int) -> VideoBatch:
            width = int(b.videos.frame_mask[s:s + 3].sum(1).max())
            return VideoBatch(b.videos.frames[s:s + 3, :width], b.videos.frame_mask[s:s + 3, :width])
        parts = [model.encode_videos(chunk(s)) for s in range(0, len(b.videos), 3)]
        v_cat = type(v).cat(parts)
        rows = [model.score(q.take(slice(s, s + 4)), v_cat) for s in range(0, len(q), 4)]
    for key in full:
        assert torch.allclose(full[key], blocked[key], atol=1e-6)
        assert torch.allclose(full[key], torch.cat([r[key] for r in rows]), atol=1e-6)


# -- training --------------------------------------------------------------------------------------

EXPECTED_KEYS = {"loss", "loss_inherit_triplet", "loss_inherit_nce", "loss_explore_triplet",
                 "loss_explore_nce", "loss_kd", "kd_weight", "alpha", "beta"}


@pytest.mark.parametrize("name", ["dl-dkd", "dl-dkd++"])
def test_training_step_terms_are_finite_and_named(name):
    torch.manual_seed(0)
    model = build(name).train()
    out = model.compute_loss(make_batch(8), progress(epoch=10))
    assert set(out) == EXPECTED_KEYS
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    for key in ("loss_inherit_triplet", "loss_inherit_nce", "loss_explore_nce", "loss_kd"):
        assert out[key].item() > 0, key
    assert out["kd_weight"].item() == pytest.approx(0.1 * 0.95 ** 10)
    if name == "dl-dkd++":
        assert out["alpha"].item() == pytest.approx(0.8 * 800 / (800 + torch.e ** (10 / 8)), rel=1e-6)
    else:
        assert out["alpha"].item() == 1.0 and out["beta"].item() == 1.0     # hard targets
    out["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


def test_total_is_the_weighted_sum_of_terms():
    torch.manual_seed(1)
    model = build("dl-dkd", dropout=0.0, input_dropout=0.0).train()
    out = model.compute_loss(make_batch(9), progress(epoch=3))
    expect = (out["loss_inherit_triplet"] + 0.04 * out["loss_inherit_nce"] + out["loss_explore_triplet"]
              + 0.04 * out["loss_explore_nce"] + 0.1 * 0.95 ** 3 * out["loss_kd"])
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-6)


def test_kd_term_is_the_positive_pair_kl_summed_over_queries():
    model = build("dl-dkd").eval()
    b = make_batch(10)
    torch.manual_seed(2)
    out = model.compute_loss(b, progress())
    with torch.no_grad():
        q = F.normalize(model._query_vector("inherit", b.queries.tokens, b.queries.mask), dim=-1)
        v = F.normalize(model._frame_features("inherit", b.videos.frames, b.videos.frame_mask), dim=-1)
        student = torch.einsum("qd,qtd->qt", q, v[b.query_video])
        c, G = b.queries.teacher, b.videos.teacher_frames
        teacher = torch.einsum("qd,qtd->qt", F.normalize(c, dim=-1), F.normalize(G, dim=-1)[b.query_video])
        mask = b.videos.frame_mask[b.query_video]
        expect = frame_kd_loss(student, teacher, mask, temperature=0.2)
    assert out["loss_kd"].item() == pytest.approx(expect.item(), rel=1e-5)
    torch.manual_seed(2)
    mean = build("dl-dkd.kd-mean").eval()
    mean.load_state_dict(model.state_dict())
    out_mean = mean.compute_loss(b, progress())
    assert out_mean["loss_kd"].item() == pytest.approx(expect.item() / len(b.query_video), rel=1e-5)


def _grads(model, batch, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    model.compute_loss(batch, progress())["loss"].backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["dl-dkd", "dl-dkd++"])
def test_kd_gradient_reaches_only_the_inheritance_branch(name):
    with_kd = build(name).train()
    without = build(f"{name}.no-kd").train()
    without.load_state_dict(with_kd.state_dict())
    b = make_batch(11)
    a, z = _grads(with_kd, b, 3), _grads(without, b, 3)   # same dropout and negative sampling
    diff = {n: (a[n] - z[n]).abs().max().item() for n in a}
    assert max(d for n, d in diff.items() if n.startswith("branches.inherit.")) > 1e-6
    assert all(d == 0.0 for n, d in diff.items() if n.startswith("branches.explore.")), \
        {n: d for n, d in diff.items() if n.startswith("branches.explore.") and d}


def test_explore_self_targets_carry_gradient_unless_detached():
    base = build("dl-dkd++").train()
    detached = build("dl-dkd++.detach-self-targets").train()
    detached.load_state_dict(base.state_dict())
    b = make_batch(12)
    a, d = _grads(base, b, 4), _grads(detached, b, 4)
    explore = [n for n in a if n.startswith("branches.explore.")]
    inherit = [n for n in a if n.startswith("branches.inherit.")]
    assert max((a[n] - d[n]).abs().max().item() for n in explore) > 1e-7
    assert all(torch.equal(a[n], d[n]) for n in inherit)


def test_hard_negative_phase_comes_from_progress():
    model = build("dl-dkd", hard_negative_start_epoch=5, dropout=0.0, input_dropout=0.0).train()
    b = make_batch(13, counts=(1,) * 30)
    torch.manual_seed(5)
    early = model.compute_loss(b, progress(epoch=4))["loss_inherit_triplet"]
    torch.manual_seed(5)
    late = model.compute_loss(b, progress(epoch=5))["loss_inherit_triplet"]
    assert late.item() > early.item()     # negatives from the top-20 pool are harder


@pytest.mark.parametrize("name", ["dl-dkd", "dl-dkd++"])
def test_hard_negative_start_minus_one_means_never(name):
    b = make_batch(13, counts=(1,) * 30)

    def triplet(start, epoch):
        torch.manual_seed(0)
        model = build(name, hard_negative_start_epoch=start, dropout=0.0, input_dropout=0.0).train()
        torch.manual_seed(5)
        return model.compute_loss(b, progress(epoch=epoch))["loss_inherit_triplet"].item()

    never = triplet(-1, 119)
    assert never == triplet(10_000, 119)          # the random-negative phase, at any epoch
    assert never != triplet(0, 119)
    with pytest.raises(ValueError, match="-1 for never"):
        DLDKDConfig(hard_negative_start_epoch=-2)


# -- config and registry ---------------------------------------------------------------------------

def test_requirements_follow_the_config():
    assert DLDKD.requirements(get_method("dl-dkd").default_config) == {"teacher", "teacher_first_n"}
    assert DLDKD.requirements(get_method("dl-dkd.teacher-bin").default_config) == {"teacher"}
    assert DLDKD.requirements(get_method("dl-dkd++").default_config) == {"teacher", "teacher_length"}
    assert DLDKD.requirements(get_method("dl-dkd.no-kd").default_config) == frozenset()
    assert DLDKD.requirements(get_method("dl-dkd.explore-only").default_config) == frozenset()
    assert DLDKD.requirements(get_method("dl-dkd++.no-kd").default_config) == {"teacher", "teacher_length"}
    assert DLDKD.batch_sort == "captions"


def test_reference_defaults():
    iccv, journal = get_method("dl-dkd").default_config, get_method("dl-dkd++").default_config
    assert (iccv.separate_query_projection, iccv.label_style, iccv.kd_reduction) == (False, "hard", "sum")
    assert (journal.separate_query_projection, journal.label_style) == (True, "soft")
    assert (iccv.teacher_alignment, journal.teacher_alignment) == ("first_n", "bin")
    assert (journal.explore_target_detach, journal.soft_partition, journal.soft_v2t,
            journal.teacher_soft_targets) == (False, "position", "log_weighted_sum", "raw_dot")
    p = progress(epoch=50)
    assert journal.kd_weight(p) == pytest.approx(0.1 * 0.95 ** 50)
    assert journal.beta(p) == 0.5 and journal.alpha(p) == pytest.approx(0.486, abs=5e-4)
    readme = get_method("dl-dkd.readme-an").default_config
    assert readme.kd_scale == 1.0 and readme.kd_weight(progress(epoch=0)) == pytest.approx(0.001)
    rising = get_method("dl-dkd.decay-rising-exp").default_config
    assert rising.kd_weight(progress(epoch=0)) == pytest.approx(0.1)      # 0.1·(1 − 1) + init 0.1
    with pytest.raises(ValueError, match="fusion_inherit"):
        DLDKDConfig(fusion_inherit=1.5)


def _variants():
    return [e.name for e in list_methods() if e.base in ("dl-dkd", "dl-dkd++")]


def test_variant_coverage():
    names = set(_variants())
    for suffix in ("single-branch", "explore-only", "no-kd", "fixed-kd", "decay-linear", "decay-sigmoid",
                   "decay-rising-exp", "decay-capped-growth", "decay-rising-capped",
                   "fusion-inherit", "fusion-explore"):
        assert f"dl-dkd.{suffix}" in names and f"dl-dkd++.{suffix}" in names
    for name in ("dl-dkd.readme-an", "dl-dkd.soft-targets", "dl-dkd++.hard-targets",
                 "dl-dkd++.detach-self-targets", "dl-dkd++.alpha-cosine", "dl-dkd++.beta-none"):
        assert name in names
    assert all(get_method(n).summary for n in names)


def test_max_over_frames_ignores_padding():
    scores = torch.tensor([[[0.1, 0.9, 5.0], [0.3, -2.0, 7.0]]])     # (1, 2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert max_over_frames(scores, mask).tolist() == [[pytest.approx(0.9), pytest.approx(0.3)]]
