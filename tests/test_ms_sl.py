"""ms-sl (docs/methods.md §4): parameter counts, KCGA by hand, training tensors, losses,
chunked scoring against a per-pair loop oracle. Every variant is trained in tests/test_registry.py."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import FeatureDims, Progress
from benchmark.registry import get_method
from methods.losses.nce import clip_nce, frame_nce
from methods.losses.ranking import clip_triplet_loss, frame_triplet_loss
from methods.ms_sl import MSSL, MSSLConfig, MSSLQueryEncoding, MSSLVideoEncoding

DIMS = FeatureDims(query=12, video=10, max_frames=16, max_query_tokens=6, num_clips=8)
SMALL = MSSLConfig(hidden_size=8, num_heads=2)



def progress(epoch: int) -> Progress:
    return Progress(epoch=epoch, num_epochs=100, step=0, steps_per_epoch=1)


def make_videos(lengths, dims=DIMS, seed=0) -> VideoBatch:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    frames = torch.randn(len(lengths), t, dims.video, generator=g)
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).float()
    clips = torch.randn(len(lengths), dims.num_clips, dims.video, generator=g)
    return VideoBatch(frames * mask[..., None], mask, clips)


def make_queries(n, dims=DIMS, seed=1) -> QueryBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, dims.max_query_tokens + 1, (n,), generator=g)
    mask = (torch.arange(dims.max_query_tokens)[None, :] < lengths[:, None]).float()
    return QueryBatch(torch.randn(n, dims.max_query_tokens, dims.query, generator=g), mask)


def make_batch(seed=0) -> TrainBatch:
    query_video = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    return TrainBatch(make_queries(7, seed=seed + 1), make_videos([16, 12, 9, 5], seed=seed),
                      query_video)


def model(config=SMALL, seed=0) -> MSSL:
    torch.manual_seed(seed)
    return MSSL(config, DIMS)


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("d_q, d_v, expected", [(768, 3072, 4_852_992), (1024, 1024, 3_370_752)])
def test_parameter_count_matches_methods_md(d_q, d_v, expected):
    net = MSSL(MSSLConfig(), FeatureDims(query=d_q, video=d_v))
    assert sum(p.numel() for p in net.parameters()) == expected


def test_registry_entries_and_recipe_defaults():
    entry = get_method("ms-sl")
    assert entry.cls is MSSL and entry.default_config == MSSLConfig()
    assert MSSL.requires == frozenset({"clips"}) and MSSL.batch_sort == "frames"
    c = entry.default_config
    assert (c.hidden_size, c.num_heads, c.margin) == (384, 4, 0.2)
    assert (c.hard_negative_start_epoch, c.hard_pool_size) == (20, 20)
    assert (c.clip_nce_weight, c.frame_nce_weight, c.clip_weight, c.frame_weight) == (0.02, 0.04, 0.7, 0.3)
    assert get_method("ms-sl.mask-false-negatives").default_config.frame_same_video_negatives == "mask"
    assert get_method("ms-sl.all-fixes").default_config.triplet_v2t_hard == "pool"
    assert get_method("ms-sl.clip-only").default_config.frame_weight == 0.0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="hard_pool_size"):
        MSSLConfig(hard_pool_size=0)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MSSLConfig(hidden_size=10, num_heads=4)


def test_encode_videos_requires_clips():
    videos = make_videos([4, 3])
    with pytest.raises(ValueError, match="clips"):
        model().encode_videos(replace(videos, clips=None))


# ---------------------------------------------------------------- KCGA by hand

def test_score_kcga_hand_computed():
    net = MSSL(MSSLConfig(hidden_size=2, num_heads=1), DIMS)
    with torch.no_grad():
        net.key_map.weight.copy_(torch.eye(2))
        net.value_map.weight.copy_(torch.eye(2))
    q = MSSLQueryEncoding(torch.tensor([[1.0, 0.05]]))
    # 2 clips -> proposals (3,0), (0,1), (1.5,.5); the cosine argmax is the raw (3, 0)
    clips = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = net.score(q, MSSLVideoEncoding(clips, frames, mask))
    clip = 1 / math.sqrt(1.0025)
    # KCGA scores K·u = (3, 0, masked): no 1/sqrt(d), the raw proposal, the pad ignored
    a = math.exp(3) / (math.exp(3) + 1)
    f = torch.tensor([a, 1 - a])
    frame = F.cosine_similarity(torch.tensor([1.0, 0.05]), f, dim=0).item()
    assert out["clip"].item() == pytest.approx(clip, abs=1e-6)
    assert out["frame"].item() == pytest.approx(frame, abs=1e-6)
    assert out["score"].item() == pytest.approx(0.7 * clip + 0.3 * frame, abs=1e-6)
    # a normalised or scaled guide would give a different frame score
    a_norm = math.exp(1) / (math.exp(1) + 1)
    assert abs(frame - F.cosine_similarity(torch.tensor([1.0, 0.05]),
                                           torch.tensor([a_norm, 1 - a_norm]), dim=0).item()) > 1e-2


# ---------------------------------------------------------------- scoring: chunks and oracle

def score_oracle(net: MSSL, q: Tensor, v: MSSLVideoEncoding):
    """Per (query, video) loop restating the reference inference (eval.py / model.py)."""
    from methods.layers.pooling import multi_scale_proposals
    nq, nv = q.shape[0], len(v)
    clip = torch.empty(nq, nv)
    frame = torch.empty(nq, nv)
    for j in range(nv):
        n = int(v.frame_mask[j].sum())
        props = multi_scale_proposals(v.clips[j:j + 1])[0]
        frames = v.frames[j, :n]
        for i in range(nq):
            cos = F.cosine_similarity(props, q[i][None], dim=-1)
            clip[i, j] = cos.max()
            u = props[cos.argmax()]
            alpha = torch.softmax(net.key_map(frames) @ u, dim=0)
            frame[i, j] = F.cosine_similarity(alpha @ net.value_map(frames), q[i], dim=0)
    return clip, frame


Tensor = torch.Tensor


def test_chunked_scoring_equals_unchunked_and_oracle():
    net = model().eval()
    lengths = [16, 3, 9, 1, 12, 7]
    videos = make_videos(lengths, seed=3)
    queries = make_queries(9, seed=4)
    with torch.no_grad():
        q = net.encode_queries(queries)
        v = net.encode_videos(videos)
        full = net.score(q, v)
        clip, frame = score_oracle(net, q.query, v)
        torch.testing.assert_close(full["clip"], clip, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full["frame"], frame, atol=1e-5, rtol=1e-5)
        # videos encoded in chunks of their own (shorter frame axes), queries in chunks
        parts = [net.encode_videos(VideoBatch(videos.frames[s:s + 2, :max(lengths[s:s + 2])],
                                              videos.frame_mask[s:s + 2, :max(lengths[s:s + 2])],
                                              videos.clips[s:s + 2])) for s in (0, 2, 4)]
        v_cat = MSSLVideoEncoding.cat(parts)
        blocks = []
        for qs in (slice(0, 4), slice(4, 9)):
            row = [net.score(q.take(qs), part) for part in parts]
            blocks.append({k: torch.cat([r[k] for r in row], dim=1) for k in full})
        chunked = {k: torch.cat([b[k] for b in blocks]) for k in full}
        net.score_budget_elements = 1          # one query per sub-block
        tiny = net.score(q, v_cat)
    for k in ("score", "clip", "frame"):
        torch.testing.assert_close(chunked[k], full[k], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(tiny[k], full[k], atol=1e-6, rtol=1e-6)


def test_single_query_block_keeps_batch_dim():
    net = model().eval()
    with torch.no_grad():
        q = net.encode_queries(make_queries(1))
        out = net.score(q, net.encode_videos(make_videos([5, 3])))
    assert q.query.shape == (1, 8) and out["score"].shape == (1, 2)


# ---------------------------------------------------------------- training tensors

def test_training_tensors_query_by_query_with_own_guidance():
    net = model().eval()
    batch = make_batch()
    with torch.no_grad():
        s = net.training_scores(batch)
        q = net.encode_queries(batch.queries)
        v = net.encode_videos(batch.videos)
        inference = net.score(q, v)
    y = batch.query_video
    assert s["clip"].shape == (7, 4) and s["frame"].shape == (7, 7)
    torch.testing.assert_close(s["clip"], inference["clip"])
    # diagonal: the positive pair scored as at inference
    torch.testing.assert_close(s["frame"].diagonal(), inference["frame"][torch.arange(7), y])
    # off-diagonal (i, j): query i against f(q_j, y(j)) -- query j's key clip (§4.6 item 4)
    from methods.layers.pooling import multi_scale_proposals
    props = multi_scale_proposals(v.clips)
    for j in range(7):
        k = F.normalize(q.query[j], dim=0) @ F.normalize(props[y[j]], dim=-1).t()
        u = props[y[j], k.argmax()]
        n = int(v.frame_mask[y[j]].sum())
        frames = v.frames[y[j], :n]
        f = torch.softmax(net.key_map(frames) @ u, 0) @ net.value_map(frames)
        torch.testing.assert_close(s["frame"][:, j], F.cosine_similarity(q.query, f[None], dim=-1),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s["frame_raw"][:, j], q.query @ f, atol=1e-5, rtol=1e-5)
    # U^c: max over proposals of unnormalised dot products
    torch.testing.assert_close(s["clip_raw"], torch.einsum("qd,bpd->qbp", q.query, props).amax(-1))


def test_consistent_guidance_trains_the_inference_matrix():
    net = model(MSSLConfig(hidden_size=8, num_heads=2, frame_train_guidance="consistent")).eval()
    batch = make_batch()
    with torch.no_grad():
        s = net.training_scores(batch)
        inference = net.score(net.encode_queries(batch.queries), net.encode_videos(batch.videos))
    assert s["frame"].shape == (7, 4)
    torch.testing.assert_close(s["frame"], inference["frame"], atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- losses and hard phase

def manual_loss(net: MSSL, batch, hard: bool):
    c = net.config
    y = batch.query_video
    s = net.training_scores(batch)
    exclude = (y[:, None] == y[None, :]) if c.frame_same_video_negatives == "mask" else None
    ct = clip_triplet_loss(s["clip"], y, margin=c.margin, hard=hard, hard_pool=c.hard_pool_size,
                           v2t_hard=c.triplet_v2t_hard)
    cn = clip_nce(s["clip_raw"], y)
    ft = frame_triplet_loss(s["frame"], margin=c.margin, hard=hard, hard_pool=c.hard_pool_size,
                            exclude=exclude)
    fn = frame_nce(s["frame_raw"], diagonal_once=c.frame_nce_diagonal_once, exclude=exclude)
    return ct + 0.02 * cn + ft + 0.04 * fn, (ct, cn, ft, fn)


@pytest.mark.parametrize("config", [SMALL, replace(SMALL, frame_same_video_negatives="mask",
                                                   frame_nce_diagonal_once=True, hard_pool_size=2)])
@pytest.mark.parametrize("epoch", [19, 20])
def test_compute_loss_composition_and_hard_phase(config, epoch):
    net = model(config).eval()       # eval: no dropout, so only the negative sampling draws
    batch = make_batch()
    torch.manual_seed(7)
    with torch.no_grad():
        out = net.compute_loss(batch, progress(epoch))
        torch.manual_seed(7)
        expected, (ct, cn, ft, fn) = manual_loss(net, batch, hard=epoch >= 20)
    assert set(out) == {"loss", "loss_clip_triplet", "loss_clip_nce", "loss_frame_triplet",
                        "loss_frame_nce", "hard_negatives"}
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert out["loss_frame_nce"].item() == pytest.approx(fn.item(), abs=1e-6)
    assert out["hard_negatives"].item() == float(epoch >= 20)


def test_frame_nce_switch_changes_the_loss():
    batch = make_batch()
    base = model().eval()
    fixed = model(replace(SMALL, frame_nce_diagonal_once=True)).eval()
    with torch.no_grad():
        a = base.compute_loss(batch, progress(0))["loss_frame_nce"]
        b = fixed.compute_loss(batch, progress(0))["loss_frame_nce"]
    assert a.item() > b.item()


# ---------------------------------------------------------------- reference-style loss oracle

def reference_loss_oracle(net: MSSL, batch: TrainBatch, hard: bool) -> dict[str, Tensor]:
    """MS-SL's training loss computed the way the reference code does (docs/methods.md §3, §4.3,
    §4.4; C-MSSL ``method/model.py``), restated with loops: padded tokens and frames projected,
    the proposals built by one ``avg_pool1d`` per window length, the key clip found over all
    proposals per (query, video), KCGA run per query over its own video's valid frames, and the
    four losses written per query and per video.

    Only the hard phase with top-1 v2t is covered: there the reference's random draws, the t2v
    ranks of the clip triplet and the row then column ranks of the frame triplet, are the same
    ``torch.randint`` calls, in the same order, as ours. Eval mode (no dropout) expected.
    """
    c = net.config
    assert hard and c.triplet_v2t_hard == "top1" and c.frame_train_guidance == "reference"
    y = batch.query_video.tolist()
    nq, nv = len(y), batch.videos.frames.shape[0]
    query_pack, frame_pack = net.query_encoder.pack_valid, net.frame_encoder.pack_valid
    net.query_encoder.pack_valid = net.frame_encoder.pack_valid = False
    try:
        query = net.query_encoder(batch.queries.tokens, batch.queries.mask)            # (Nq, D)
        clips = net.clip_encoder(batch.videos.clips, None)                            # (B, N, D)
        frames = net.frame_encoder(batch.videos.frames, batch.videos.frame_mask)      # (B, T, D)
    finally:
        net.query_encoder.pack_valid, net.frame_encoder.pack_valid = query_pack, frame_pack
    pooled = [F.avg_pool1d(clips.transpose(1, 2), k, stride=1).transpose(1, 2)
              for k in range(2, clips.shape[1] + 1)]
    props = torch.cat([clips, *pooled], dim=1)                                        # (B, P, D)

    # clip scale: S^c the max cosine over proposals, U^c the max raw score, per pair
    clip_s = [[None] * nv for _ in range(nq)]
    clip_u = [[None] * nv for _ in range(nq)]
    key_clip = [[0] * nv for _ in range(nq)]
    for i in range(nq):
        for b in range(nv):
            cos = F.cosine_similarity(props[b], query[i][None], dim=-1)               # (P,)
            key_clip[i][b] = int(cos.argmax())
            clip_s[i][b] = cos.max()
            clip_u[i][b] = (props[b] @ query[i]).max()
    # frame scale: query j's attended feature over its own video, guided by its key clip
    attended = []
    for j in range(nq):
        v = y[j]
        valid = frames[v, :int(batch.videos.frame_mask[v].sum())]                    # (n, D)
        guide = props[v, key_clip[j][v]]                                              # (D,)
        weights = torch.softmax(net.key_map(valid) @ guide, dim=0)                    # (n,)
        attended.append(weights @ net.value_map(valid))                               # (D,)
    frame_s = [[F.cosine_similarity(query[i], attended[j], dim=0) for j in range(nq)]
               for i in range(nq)]
    frame_u = [[query[i] @ attended[j] for j in range(nq)] for i in range(nq)]

    def hinge(neg, pos):
        return (c.margin + neg - pos).clamp(min=0)

    def sorted_negative(row, positive, rank):
        """The entry at ``rank`` of ``row`` sorted descending with ``positive`` put first."""
        order = sorted(range(len(row)), key=lambda j: (j != positive, -row[j].item()))
        return row[order[rank]]

    # clip triplet: t2v a drawn rank among the top hard_pool negatives, v2t the top-1 negative
    ranks = torch.randint(1, min(1 + c.hard_pool_size, nv), (nq,)).tolist()
    t2v = sum(hinge(sorted_negative(clip_s[i], y[i], ranks[i]), clip_s[i][y[i]])
              for i in range(nq)) / nq
    v2t = 0
    for b in range(nv):
        own = [clip_s[i][b] for i in range(nq) if y[i] == b]
        others = [clip_s[i][b] for i in range(nq) if y[i] != b]
        if own and others:
            v2t = v2t + hinge(max(others, key=lambda s: s.item()), sum(own) / len(own))
    clip_triplet = t2v + v2t / nv
    # clip NCE: each query against all videos; each video's own queries against all queries
    clip_nce = sum(torch.stack(clip_u[i]).logsumexp(0) - clip_u[i][y[i]] for i in range(nq)) / nq
    for b in range(nv):
        column = torch.stack([clip_u[i][b] for i in range(nq)])                       # (Nq,)
        own = torch.stack([clip_u[i][b] for i in range(nq) if y[i] == b])
        clip_nce = clip_nce + (column.logsumexp(0) - own.logsumexp(0)) / nv
    # frame triplet: rows, then columns, each with its own draw; positives on the diagonal
    frame_triplet = 0
    for matrix in (frame_s, [list(col) for col in zip(*frame_s)]):
        ranks = torch.randint(1, min(1 + c.hard_pool_size, nq), (nq,)).tolist()
        frame_triplet = frame_triplet + sum(hinge(sorted_negative(matrix[i], i, ranks[i]), matrix[i][i])
                                            for i in range(nq)) / nq
    # frame NCE: row and column of each query in one softmax, the diagonal counted twice
    frame_nce = sum(torch.stack(frame_u[i] + [frame_u[j][i] for j in range(nq)]).logsumexp(0)
                    - frame_u[i][i] for i in range(nq)) / nq
    loss = (c.clip_triplet_weight * clip_triplet + c.clip_nce_weight * clip_nce
            + c.frame_triplet_weight * frame_triplet + c.frame_nce_weight * frame_nce)
    return {"loss": loss, "loss_clip_triplet": clip_triplet, "loss_clip_nce": clip_nce,
            "loss_frame_triplet": frame_triplet, "loss_frame_nce": frame_nce}


def double_batch(batch: TrainBatch) -> TrainBatch:
    q, v = batch.queries, batch.videos
    return TrainBatch(QueryBatch(q.tokens.double(), q.mask.double()),
                      VideoBatch(v.frames.double(), v.frame_mask.double(), v.clips.double()),
                      batch.query_video)


@pytest.mark.parametrize("hard_pool", [20, 2])
def test_compute_loss_equals_the_reference_style_oracle(hard_pool):
    """Values and gradients of every loss term, in float64, on one generated batch (hard phase:
    both sides draw the same negatives from the global generator)."""
    net = model(replace(SMALL, hard_pool_size=hard_pool)).double().eval()
    batch = double_batch(make_batch(seed=5))
    torch.manual_seed(3)
    ours = net.compute_loss(batch, progress(25))
    ours_grads = torch.autograd.grad(ours["loss"], list(net.parameters()), allow_unused=True)
    torch.manual_seed(3)
    want = reference_loss_oracle(net, batch, hard=True)
    want_grads = torch.autograd.grad(want["loss"], list(net.parameters()), allow_unused=True)
    for key in sorted(want, key=lambda k: k == "loss"):              # the terms, then the total
        torch.testing.assert_close(ours[key], want[key].detach(), rtol=1e-10, atol=1e-12,
                                   msg=lambda m, key=key: f"{key}: {m}")
    for (name, _), a, b in zip(net.named_parameters(), ours_grads, want_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12,
                                       msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("collection, margin, weights", [("tvr", 0.1, (0.7, 0.3)),
                                                         ("activitynet", 0.2, (0.7, 0.3)),
                                                         ("charades", 0.2, (0.5, 0.5))])
def test_presets_carry_the_reference_recipe(tmp_path, collection, margin, weights):
    from benchmark.config import load_config
    cfg = load_config("ms-sl", collection, data_root=str(tmp_path))
    assert cfg.method.margin == margin
    assert (cfg.method.clip_weight, cfg.method.frame_weight) == weights
    assert (cfg.seed, cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (2018, 100, 128, 2.5e-4)
    assert cfg.method.hard_negative_start_epoch == 20
    fixed = load_config("ms-sl.all-fixes", collection, data_root=str(tmp_path))
    assert fixed.method.margin == margin and fixed.method.frame_nce_diagonal_once


def test_hard_phase_minus_one_never_starts():
    net = model(replace(SMALL, hard_negative_start_epoch=-1)).eval()
    with torch.no_grad():
        assert net.compute_loss(make_batch(), progress(50))["hard_negatives"].item() == 0.0
    with pytest.raises(ValueError, match="hard_negative_start_epoch"):
        MSSLConfig(hard_negative_start_epoch=-2)


def test_selected_clip_scale_equals_max_in_value_and_gradient():
    torch.manual_seed(0)
    clips = torch.randn(3, 8, 5, dtype=torch.float64, requires_grad=True)
    query = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    from methods.layers.pooling import multi_scale_proposals
    weights = torch.randn(4, 3, dtype=torch.float64)
    grads = []
    for fast in (True, False):
        props = multi_scale_proposals(clips)
        if fast:
            s, u, _ = MSSL._clip_scale_selected(query, clips, props)
        else:
            s = torch.einsum("qd,bpd->qbp", F.normalize(query, dim=-1), F.normalize(props, dim=-1)).amax(-1)
            u = torch.einsum("qd,bpd->qbp", query, props).amax(-1)
        grads.append((s.detach(), u.detach(),
                      *torch.autograd.grad(((s + 0.5 * u) * weights).sum(), (query, clips))))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
