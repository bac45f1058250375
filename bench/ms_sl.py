"""ms-sl training and evaluation speed and memory on small synthetic TVR, against a naive
reference-style implementation of the same model measured in the same run.

Ours: ``methods.ms_sl.MSSL`` (vectorised losses, cumulative-sum proposals, chunked scoring
through ``benchmark.evaluate.evaluate_method``). Naive: a subclass with the reference code's
computation patterns (docs/methods.md §4; C-MSSL ``method/model.py``): padded frames and tokens projected,
31 ``avg_pool1d`` calls
for the proposals, the per-video Python loop of the clip v2t triplet, the per-video loop of
``clip_nce``, KCGA maps applied to the Nq expanded frame copies, and at evaluation all
proposals of all test videos kept at once and scored in query batches of 50 (the reference's
eval batch size), ranked by the same evaluator. Both use the reference optimiser (BertAdam),
the same weights, seed and batches.

Each phase runs in a fresh child process so that its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the peak resident set of the child (including
the loaded split), reported with the resident set before the phase. Wall seconds and process
CPU seconds are both reported: on a shared CPU the CPU-time ratio is the steadier one. Never
asserted.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.measure import sync
from benchmark.memory import peak_rss_mb, reset_peak_rss

EPOCHS = 1                 # timed epochs per approach (after one untimed warm-up step)
MARGIN = 0.1               # ref: do_tvr.sh


def _naive_class():
    from methods.losses.nce import frame_nce
    from methods.losses.ranking import frame_triplet_loss
    from methods.ms_sl import MSSL

    class NaiveMSSL(MSSL):
        """Reference-style computation of the same model (comparison only, not library code)."""

        def __init__(self, config, dims):
            super().__init__(config, dims)
            self.frame_encoder.pack_valid = False       # ref: padded frames are projected too
            self.query_encoder.pack_valid = False       # ref: and padded tokens

        @staticmethod
        def _proposals(clips):
            pool_in = clips.transpose(1, 2)                                  # (B, D, 32)
            maps = [clips] + [F.avg_pool1d(pool_in, k, stride=1).transpose(1, 2)
                              for k in range(2, clips.shape[1] + 1)]
            return torch.cat(maps, dim=1)                                    # (B, 528, D)

        def _naive_clip_triplet(self, S, labels, hard):
            c = self.config
            labels_np = labels.cpu().numpy()
            v2t_scores, t2v_scores = S.t(), S
            v2t = 0
            for i in range(v2t_scores.shape[0]):                              # ref: loop over videos
                pos = torch.mean(v2t_scores[i][np.where(labels_np == i)[0]])
                neg, _ = torch.sort(v2t_scores[i][np.where(labels_np != i)[0]], descending=True)
                if hard:
                    sample = neg[0]
                else:
                    sample = neg[torch.randint(0, neg.shape[0], size=(1,)).to(S.device)]
                v2t = v2t + (c.margin + sample - pos).clamp(min=0).sum()
            rows = torch.arange(t2v_scores.shape[0], device=S.device)
            pos = t2v_scores[rows, labels]
            masked = t2v_scores.detach().clone()
            masked[rows, labels] = 999
            _, order = torch.sort(masked, descending=True, dim=1)
            top = min(1 + c.hard_pool, S.shape[1]) if hard else S.shape[1]
            idx = order[rows, torch.randint(1, top, size=(S.shape[0],)).to(S.device)]
            t2v = (c.margin + t2v_scores[rows, idx] - pos).clamp(min=0)
            return t2v.sum() / len(t2v_scores) + v2t / len(v2t_scores)

        @staticmethod
        def _naive_clip_nce(U, labels):
            label_dict: dict[int, list[int]] = {}
            for index, label in enumerate(labels.tolist()):
                label_dict.setdefault(label, []).append(index)
            rows = torch.arange(U.shape[0], device=U.device)
            t2v = torch.logsumexp(U, dim=1) - U[rows, labels]
            num = torch.zeros(U.shape[1], device=U.device)
            den = torch.zeros(U.shape[1], device=U.device)
            for i, members in label_dict.items():                            # ref: loop over videos
                num[i] = torch.logsumexp(U[members, i], dim=0)
                den[i] = torch.logsumexp(U[:, i], dim=0)
            return t2v.mean() + (den - num).mean()

        def compute_loss(self, batch, progress):
            c = self.config
            hard = progress.epoch >= c.hard_negative_start_epoch
            y = batch.query_video
            query = self.query_encoder(batch.queries.tokens, batch.queries.mask)
            clips = self.clip_encoder(batch.videos.clips, None)
            frames = self.frame_encoder(batch.videos.frames, batch.videos.frame_mask)
            props = self._proposals(clips)
            cos = torch.matmul(F.normalize(props, dim=-1), F.normalize(query, dim=-1).t()).permute(2, 1, 0)
            clip_score, index = cos.max(dim=1)                               # (Nq, B)
            clip_raw = torch.matmul(props, query.t()).permute(2, 1, 0).max(dim=1).values
            rows = torch.arange(len(y), device=y.device)
            exp_frames = frames[y]                                           # (Nq, T, D) ref expansion
            key = self.key_map(exp_frames)
            value = self.value_map(exp_frames)
            guide = props[y][rows, index[rows, y]].unsqueeze(-1)             # (Nq, D, 1)
            scores = torch.bmm(key, guide).squeeze(-1)
            scores = scores.masked_fill(batch.videos.frame_mask[y].eq(0), -1e9).unsqueeze(1)
            attended = torch.bmm(scores.softmax(dim=-1), value).squeeze(1)   # (Nq, D)
            frame = F.normalize(query, dim=-1) @ F.normalize(attended, dim=-1).t()
            frame_raw = query @ attended.t()
            loss = (self._naive_clip_triplet(clip_score, y, hard)
                    + c.clip_nce_weight * self._naive_clip_nce(clip_raw, y)
                    + frame_triplet_loss(frame, margin=c.margin, hard=hard, hard_pool=c.hard_pool)
                    + c.frame_nce_weight * frame_nce(frame_raw))
            return {"loss": loss}

    return NaiveMSSL


def _setup(data_root: str, naive: bool, device: str, splits=("train",)):
    from benchmark.config import OptimConfig
    from benchmark.data.split import load_split
    from methods.ms_sl import MSSL, MSSLConfig

    torch.manual_seed(2018)
    loaded = {s: load_split(pathlib.Path(data_root), "tvr", s, requires=frozenset({"clips"}))
              for s in splits}
    dims = next(iter(loaded.values())).dims
    cls = _naive_class() if naive else MSSL
    model = cls(MSSLConfig(margin=MARGIN), dims).to(device)
    return model, loaded, OptimConfig


def _phase_train(data_root: str, device: str, naive: bool) -> dict:
    from benchmark.data.loaders import steps_per_epoch, train_batches
    from benchmark.interface import Progress
    from benchmark.training.optim import build_optimizer

    model, splits, optim_cfg = _setup(data_root, naive, device)
    train = splits["train"]
    steps = steps_per_epoch(train, 128)
    optimizer = build_optimizer(model, optim_cfg(lr=2.5e-4), t_total=steps * EPOCHS + 1)
    reset_peak_rss()
    rss_before = peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    gen = torch.Generator().manual_seed(0)

    def step(batch, index, epoch):
        batch = batch.to(device)
        progress = Progress(epoch=epoch, num_epochs=100, step=index, steps_per_epoch=steps)
        loss = model.compute_loss(batch, progress)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(next(train_batches(train, 128, gen, sort_by="frames")), 0, 0)   # warm-up, not timed
    times, cpu_times = [], []
    for epoch in range(EPOCHS):
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for index, batch in enumerate(train_batches(train, 128, gen, sort_by="frames")):
            step(batch, index, epoch)
        sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    out = {"epoch_seconds": float(np.mean(times)), "epoch_cpu_seconds": float(np.mean(cpu_times)),
           "rss_before_mb": rss_before, "steps_per_epoch": steps}
    out["peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
                      else peak_rss_mb())
    return out


def _naive_scores(model, split, device):
    """Reference eval: all proposals and frames of every test video resident, 50 queries at a time."""
    with torch.no_grad():
        videos = split.video_batch(np.arange(split.num_videos)).to(device)
        clips = model.clip_encoder(videos.clips, None)
        frames = model.frame_encoder(videos.frames, videos.frame_mask)
        props = model._proposals(clips)                                       # (Nv, 528, D)
        props_n = F.normalize(props, dim=-1)
        key, value = model.key_map(frames), model.value_map(frames)
        index = torch.arange(split.num_videos, device=device).unsqueeze(1)
        blocks = []
        for qs in range(0, split.num_queries, 50):
            qb = split.query_batch(np.arange(qs, min(qs + 50, split.num_queries))).to(device)
            query = model.query_encoder(qb.tokens, qb.mask)
            cos = torch.matmul(props_n, F.normalize(query, dim=-1).t()).permute(2, 1, 0)  # (q, P, Nv)
            clip_score, idx = cos.max(dim=1)                                  # (q, Nv)
            guide = props[index, idx.t()]                                     # (Nv, q, D)
            s = torch.bmm(key, guide.transpose(2, 1)).masked_fill(videos.frame_mask.unsqueeze(-1).eq(0), -1e9)
            att = torch.bmm(s.softmax(dim=1).transpose(1, 2), value)          # (Nv, q, D)
            frame_score = (F.normalize(att, dim=-1) * F.normalize(query, dim=-1).unsqueeze(0)).sum(-1).t()
            blocks.append(model.config.clip_weight * clip_score + model.config.frame_weight * frame_score)
        return torch.cat(blocks).cpu()


def _phase_eval(data_root: str, device: str, naive: bool) -> dict:
    from benchmark.evaluate import evaluate, evaluate_method

    model, splits, _ = _setup(data_root, naive, device, splits=("test",))
    test = splits["test"]
    model.eval()
    reset_peak_rss()
    rss_before = peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    if naive:
        result = evaluate(_naive_scores(model, test, device).numpy(), test.query_video)
    else:
        result = evaluate_method(model, test, query_chunk=2048, video_chunk=256, device=device)
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    out = {"eval_seconds": seconds, "eval_cpu_seconds": cpu_seconds, "rss_before_mb": rss_before,
           "SumR": float(result.metrics()["SumR"])}
    out["peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
                      else peak_rss_mb())
    return out


def _child(phase: str, data_root: pathlib.Path, device: str, naive: bool) -> dict:
    code = (f"import json, sys; from bench import ms_sl; "
            f"print('RESULT' + json.dumps(ms_sl._phase_{phase}({str(data_root)!r}, {device!r}, {naive})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ms_sl bench phase {phase} (naive={naive}) failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    """Seconds per epoch and peak memory of ms-sl training and evaluation, ours vs naive."""
    data_root = pathlib.Path(data_root)
    ours_t = _child("train", data_root, device, False)
    naive_t = _child("train", data_root, device, True)
    ours_e = _child("eval", data_root, device, False)
    naive_e = _child("eval", data_root, device, True)
    unit = "alloc" if device.startswith("cuda") else "rss"
    return {
        "train_epoch_seconds": ours_t["epoch_seconds"],
        "train_epoch_seconds_naive": naive_t["epoch_seconds"],
        "train_speedup_vs_naive": naive_t["epoch_seconds"] / ours_t["epoch_seconds"],
        "train_epoch_cpu_seconds": ours_t["epoch_cpu_seconds"],
        "train_epoch_cpu_seconds_naive": naive_t["epoch_cpu_seconds"],
        "train_cpu_speedup_vs_naive": naive_t["epoch_cpu_seconds"] / ours_t["epoch_cpu_seconds"],
        f"train_peak_{unit}_mb": ours_t["peak_mb"],
        f"train_peak_{unit}_mb_naive": naive_t["peak_mb"],
        "train_steps_per_epoch": float(ours_t["steps_per_epoch"]),
        "eval_seconds": ours_e["eval_seconds"],
        "eval_seconds_naive": naive_e["eval_seconds"],
        "eval_speedup_vs_naive": naive_e["eval_seconds"] / ours_e["eval_seconds"],
        "eval_cpu_seconds": ours_e["eval_cpu_seconds"],
        "eval_cpu_seconds_naive": naive_e["eval_cpu_seconds"],
        "eval_cpu_speedup_vs_naive": naive_e["eval_cpu_seconds"] / ours_e["eval_cpu_seconds"],
        f"eval_peak_{unit}_mb": ours_e["peak_mb"],
        f"eval_peak_{unit}_mb_naive": naive_e["peak_mb"],
        "eval_rss_before_mb": ours_e["rss_before_mb"],
        "eval_sumr": ours_e["SumR"],
        "eval_sumr_naive": naive_e["SumR"],
        "device": device,
    }
