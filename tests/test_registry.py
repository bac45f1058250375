"""The registry is the test matrix (docs/style.md §5): every registered method and variant is
built once and gets the registration, config round-trip, shape, finiteness, separability,
determinism, gradient and optimiser-step checks here, so a method registered later is tested the
moment it lands. This is the only per-variant matrix; method test modules test their own maths.
Inputs are small random batches built directly.
"""
from __future__ import annotations

import json

import pytest
import torch

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import KNOWN_REQUIREMENTS, Encoding, FeatureDims, Progress
from benchmark.overrides import apply_overrides, to_jsonable
from benchmark.registry import get_method, list_methods

torch.set_num_threads(1)

NAMES = [entry.name for entry in list_methods()]
DIMS = FeatureDims(query=12, video=10, teacher=8)
NUM_EPOCHS, STEPS = 40, 5


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-5)


def make_batch(requires: frozenset[str], *, captions=(3, 1, 2, 2), frames=(9, 4, 7, 1),
               tokens=(5, 3, 7, 2, 4, 6, 1, 5), seed: int = 0) -> TrainBatch:
    """A video-centric batch: padded, masked, queries of a video contiguous (docs/methods.md §1.4).

    Shapes: B = len(frames) videos, Nq = sum(captions) queries, T = max(frames), L = max(tokens).
    """
    g = torch.Generator().manual_seed(seed)
    nq, b = sum(captions), len(frames)
    t, length = max(frames), max(tokens[:nq])
    frame_mask = (torch.arange(t)[None, :] < torch.tensor(frames)[:, None]).float()       # (B, T)
    token_mask = (torch.arange(length)[None, :] < torch.tensor(tokens[:nq])[:, None]).float()  # (Nq, L)
    video_frames = _unit(torch.randn(b, t, DIMS.video, generator=g)) * frame_mask[..., None]
    query_tokens = _unit(torch.randn(nq, length, DIMS.query, generator=g)) * token_mask[..., None]
    teacher = "teacher" in requires
    videos = VideoBatch(
        frames=video_frames, frame_mask=frame_mask,
        clips=(_unit(torch.randn(b, DIMS.num_clips, DIMS.video, generator=g))
               if "clips" in requires else None),
        teacher_frames=(torch.randn(b, t, DIMS.teacher, generator=g) * frame_mask[..., None]
                        if teacher else None))
    queries = QueryBatch(tokens=query_tokens, mask=token_mask,
                         teacher=torch.randn(nq, DIMS.teacher, generator=g) if teacher else None)
    query_video = torch.repeat_interleave(torch.arange(b), torch.tensor(captions))           # (Nq,)
    return TrainBatch(queries=queries, videos=videos, query_video=query_video)


def build(name: str):
    entry = get_method(name)
    torch.manual_seed(0)
    method = entry.cls(entry.default_config, DIMS)
    requires = frozenset(entry.cls.requirements(entry.default_config))
    return entry, method, requires


def check_encode_and_score(method, batch) -> None:
    """Shapes, finiteness, separability (architecture §3) and eval-mode determinism of score."""
    method.eval()
    with torch.no_grad():
        q = method.encode_queries(batch.queries)
        v = method.encode_videos(batch.videos)
        assert isinstance(q, Encoding) and isinstance(v, Encoding)
        nq, b = len(batch.queries), len(batch.videos)
        assert len(q) == nq and len(v) == b
        scores = method.score(q, v)
        assert "score" in scores
        for key, value in scores.items():
            assert value.shape == (nq, b), key
            assert torch.isfinite(value).all(), key
        part = method.score(q.take(slice(1, 4)), v.take(slice(2, 4)))
        for key, value in scores.items():
            torch.testing.assert_close(part[key], value[1:4, 2:4], msg=key)
        again = method.score(method.encode_queries(batch.queries), method.encode_videos(batch.videos))
        for key, value in scores.items():
            assert torch.equal(again[key], value), key


def check_loss(method, batch, epoch: int) -> set[str]:
    """compute_loss at ``epoch``: a finite scalar "loss", finite terms and gradients.
    Returns the names of trainable parameters that received no gradient."""
    method.train()
    method.zero_grad(set_to_none=True)
    progress = Progress(epoch=epoch, num_epochs=NUM_EPOCHS, step=epoch * STEPS, steps_per_epoch=STEPS)
    out = method.compute_loss(batch, progress)
    assert "loss" in out and out["loss"].dim() == 0 and out["loss"].requires_grad
    for key, value in out.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), (epoch, key)
    out["loss"].backward()
    for n, p in method.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), (epoch, n)
    return {n for n, p in method.named_parameters() if p.requires_grad and p.grad is None}


def check_registration(entry) -> None:
    """The entry is well formed and its config survives JSON from both defaults."""
    assert entry.base == entry.name.split(".")[0]
    assert entry.summary.strip()
    assert isinstance(entry.default_config, entry.cls.config_cls)
    assert entry.cls.requirements(entry.default_config) <= KNOWN_REQUIREMENTS
    assert entry.cls.batch_sort in ("frames", "captions")
    data = json.loads(json.dumps(to_jsonable(entry.default_config)))
    assert apply_overrides(get_method(entry.base).default_config, data) == entry.default_config
    assert apply_overrides(entry.cls.config_cls(), data) == entry.default_config


#: Variants that switch a branch off, and the parameters left without gradient (by name prefix).
#: Every other entry must give a gradient to every trainable parameter (docs/style.md §5).
NO_GRADIENT = {
    "ms-sl.clip-only": ("frame_encoder.", "key_map.", "value_map."),   # frame branch weight 0
}


@pytest.mark.parametrize("name", NAMES)
def test_registered_entry(name):
    """Every check of the matrix, once per registered name: registration and config round trip,
    encode/score contract, then a loss at epoch 0, one optimiser step, and a loss late in
    training (hard-negative phases on) on the updated weights."""
    entry, method, requires = build(name)
    check_registration(entry)
    batch = make_batch(requires, seed=1)
    check_encode_and_score(method, batch)
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    prefixes = NO_GRADIENT.get(name, ())
    expected_missing = {n for n in trainable if n.startswith(prefixes)}
    assert bool(expected_missing) == bool(prefixes), f"{name}: NO_GRADIENT matches no parameter"
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    for epoch in (0, NUM_EPOCHS - 1):
        missing = check_loss(method, batch, epoch)
        assert missing == expected_missing, (
            f"{name} epoch {epoch}: no gradient reaches {sorted(missing - expected_missing)}; "
            f"unexpected gradient on {sorted(expected_missing - missing)}")
        before = {n: p.detach().clone() for n, p in method.named_parameters() if n in trainable}
        opt.step()
        assert any(not torch.equal(p, before[n]) for n, p in method.named_parameters()
                   if n in before), f"{name} epoch {epoch}: the optimiser step moved nothing"


def test_mean_pool_masked_mean_matches_loop():
    from methods.mean_pool import masked_mean

    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 5, generator=g)
    lengths = [6, 1, 3, 0]
    mask = (torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]).float()
    got = masked_mean(x, mask)
    for i, n in enumerate(lengths):                       # loop oracle
        want = x[i, :n].mean(0) if n else torch.zeros(5)
        torch.testing.assert_close(got[i], want)


def test_unknown_method_suggests_and_summarises_variants():
    from benchmark.registry import UnknownNameError, get_method

    with pytest.raises(UnknownNameError) as info:
        get_method("ms-ls")
    message = str(info.value)
    assert "did you mean ms-sl?" in message
    assert "mean-pool, ms-sl and" in message and "variants" in message and "--list-methods" in message
    assert "ms-sl.clip-only" not in message          # the variant list is not dumped
