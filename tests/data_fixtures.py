"""Hand-written MS-SL-layout collections for the data-layer tests (docs/methods.md §1.1).

``write_toy`` writes a BigFile (rows shuffled, so lookups must go through video2frames and
id.txt), a RoBERTa HDF5, caption files and optionally the CLIP teacher HDF5 files, and returns
every raw array it wrote so that tests can compare the loader with loop oracles.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

VISUAL = "toyfeat"


@dataclass
class Toy:
    root: Path
    collection: str
    visual_feature: str
    captions: dict[str, list[tuple[str, str]]]           # split -> [(cap_id, text)]
    frames: dict[str, np.ndarray]                         # video -> (n, d_v) raw
    tokens: dict[str, np.ndarray]                         # cap_id -> (L, d_q) raw
    teacher_frames: dict[str, np.ndarray] = field(default_factory=dict)   # video -> (T, d_t)
    teacher_text: dict[str, np.ndarray] = field(default_factory=dict)     # cap_id -> (d_t,)

    @property
    def dir(self) -> Path:
        return self.root / self.collection

    @property
    def text_dir(self) -> Path:
        return self.dir / "TextData"

    @property
    def bigfile(self) -> Path:
        return self.dir / "FeatureData" / self.visual_feature

    def caption_file(self, split: str) -> Path:
        return self.text_dir / f"{self.collection}{split}.caption.txt"

    @property
    def roberta(self) -> Path:
        return self.text_dir / f"roberta_{self.collection}_query_feat.hdf5"

    @property
    def clip_text(self) -> Path:
        return self.text_dir / f"clip_ViT_B_32_{self.collection}_query_feat.hdf5"

    @property
    def clip_video(self) -> Path:
        return self.dir / "FeatureData" / f"new_clip_vit_32_{self.collection}_vid_features.hdf5"

    def copy(self, dest: Path) -> "Toy":
        """A full copy to damage in a malformed-input test."""
        shutil.copytree(self.root, dest)
        return Toy(dest, self.collection, self.visual_feature, self.captions, self.frames,
                   self.tokens, self.teacher_frames, self.teacher_text)

    def split_videos(self, split: str) -> list[str]:
        return list(dict.fromkeys(c.split("#", 1)[0] for c, _ in self.captions[split]))


DEFAULT_SPLITS = {
    # split -> {video: (frames, captions)}; lengths around 128 and 32 exercise both binnings
    "train": {"vidA": (5, 2), "vidB": (140, 3), "vidC": (40, 1), "vidD": (1, 2), "vidE": (300, 4)},
    "val": {"vidF": (7, 2), "vidG": (129, 1)},
    "test": {"vidH": (33, 3), "vidI": (128, 2), "vidJ": (2, 1)},
}


def write_toy(root: Path, *, collection: str = "toy", splits: dict | None = None,
              d_q: int = 8, d_v: int = 6, d_t: int = 4, teacher: bool = True,
              teacher_lengths: dict[str, int] | None = None, token_lengths=(3, 40),
              roberta_leading_axis: bool = False, clip_text_hash_keys: bool = False,
              seed: int = 0) -> Toy:
    """Write a small collection. ``teacher_lengths[v]`` overrides the teacher frame count
    (default: the student count); ``clip_text_hash_keys`` stores CLIP text under
    ``<vid>#<k>`` instead of the cap_id."""
    rng = np.random.default_rng(seed)
    splits = DEFAULT_SPLITS if splits is None else splits
    root = Path(root)
    toy = Toy(root, collection, VISUAL, {}, {}, {})
    toy.text_dir.mkdir(parents=True)
    toy.bigfile.mkdir(parents=True)
    for split, videos in splits.items():
        lines = []
        for video, (n_frames, n_caps) in videos.items():
            toy.frames[video] = rng.standard_normal((n_frames, d_v)).astype(np.float32)
            for k in range(n_caps):
                cap_id = f"{video}#enc#{k}"
                lines.append((cap_id, f"caption {k} of {video}"))
                length = int(rng.integers(token_lengths[0], token_lengths[1] + 1))
                toy.tokens[cap_id] = rng.standard_normal((length, d_q)).astype(np.float32)
        toy.captions[split] = lines
        toy.caption_file(split).write_text("".join(f"{c} {t}\n" for c, t in lines))

    # BigFile: rows in a shuffled order.
    frame_ids = [(f"{v}_{i}", v, i) for v, x in toy.frames.items() for i in range(len(x))]
    order = rng.permutation(len(frame_ids))
    rows = np.stack([toy.frames[frame_ids[j][1]][frame_ids[j][2]] for j in order])
    (toy.bigfile / "feature.bin").write_bytes(rows.astype(np.float32).tobytes())
    (toy.bigfile / "shape.txt").write_text(f"{len(rows)} {d_v}\n")
    (toy.bigfile / "id.txt").write_text(" ".join(frame_ids[j][0] for j in order))
    video2frames = {v: [f"{v}_{i}" for i in range(len(x))] for v, x in toy.frames.items()}
    (toy.bigfile / "video2frames.txt").write_text(repr(video2frames))

    with h5py.File(toy.roberta, "w") as h5:
        for cap_id, x in toy.tokens.items():
            h5[cap_id] = x[None] if roberta_leading_axis else x
    if teacher:
        teacher_lengths = teacher_lengths or {}
        with h5py.File(toy.clip_video, "w") as h5:
            for video, x in toy.frames.items():
                t = teacher_lengths.get(video, len(x))
                toy.teacher_frames[video] = rng.standard_normal((t, d_t)).astype(np.float32)
                h5[video] = toy.teacher_frames[video]
        with h5py.File(toy.clip_text, "w") as h5:
            for cap_id in toy.tokens:
                toy.teacher_text[cap_id] = rng.standard_normal(d_t).astype(np.float32)
                key = cap_id.replace("#enc#", "#") if clip_text_hash_keys else cap_id
                h5[key] = toy.teacher_text[cap_id][None]
    return toy


def write_moments_file(path: Path, rows: list[tuple[str, float, float, float]]) -> Path:
    """rows: (cap_id, start, end, duration)."""
    path.write_text("".join(json.dumps({"cap_id": c, "ts": [s, e], "duration": d}) + "\n"
                            for c, s, e, d in rows))
    return path


def ref_uniform_sampling(x: np.ndarray, max_len: int) -> np.ndarray:
    """Loop oracle restating the reference ``uniform_feature_sampling`` (docs/methods.md §1.3)."""
    n = x.shape[0]
    if n <= max_len:
        return x
    idx = np.round(np.arange(0, max_len + 1, 1.0) / max_len * n).astype(np.int32)
    idx[idx > n - 1] = n - 1
    out = []
    for s, e in zip(idx[:-1], idx[1:]):
        out.append(np.mean(x[s:e], axis=0) if s < e else x[s])
    return np.asarray(out)


def ref_average_to_fixed_length(x: np.ndarray, num_clips: int) -> np.ndarray:
    """Loop oracle restating the reference ``average_to_fixed_length`` (torch rounding)."""
    import torch

    v = torch.from_numpy(x)
    n = v.shape[0]
    idx = torch.arange(0, num_clips + 1, 1.0) / num_clips * n
    idx = torch.min(torch.round(idx).long(), torch.tensor(n - 1))
    out = []
    for i in range(num_clips):
        s, e = idx[i].item(), idx[i + 1].item()
        out.append(torch.mean(v[s:e], dim=0) if s < e else v[s])
    return torch.stack(out).numpy()


def ref_l2(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-5)
