"""The MS-SL directory layout (docs/methods.md §1.1): every path from root + collection.

```
<root>/<c>/TextData/<c>{train,val,test}.caption.txt
<root>/<c>/TextData/roberta_<c>_query_feat.hdf5
<root>/<c>/TextData/clip_ViT_B_32_<c>_query_feat.hdf5          (teacher, optional)
<root>/<c>/TextData/<c>_moments.jsonl                          (prvr-bench: M/V, optional)
<root>/<c>/FeatureData/<visual_feature>/{feature.bin,id.txt,shape.txt,video2frames.txt}
<root>/<c>/FeatureData/new_clip_vit_32_<c>_vid_features.hdf5   (teacher, optional)
<root>/<c>/SYNTHETIC                                           (prvr-bench generator marker)
```
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

#: Default visual feature per known collection (docs/methods.md §1.1, do_*.sh).
DEFAULT_VISUAL_FEATURE = {"tvr": "i3d_resnet", "activitynet": "i3d", "charades": "i3d_rgb_lgi"}

SPLITS = ("train", "val", "test")
SYNTHETIC_MARKER = "SYNTHETIC"


def default_visual_feature(collection: str, visual_feature: str | None = None) -> str:
    if visual_feature:
        return visual_feature
    try:
        return DEFAULT_VISUAL_FEATURE[collection]
    except KeyError:
        raise DataError(None, f"collection {collection!r} has no default visual feature; pass "
                              f"--visual-feature (known defaults: {DEFAULT_VISUAL_FEATURE})") from None


@dataclass(frozen=True)
class Layout:
    root: Path
    collection: str
    visual_feature: str

    @classmethod
    def resolve(cls, root: str | Path, collection: str, visual_feature: str | None = None) -> "Layout":
        return cls(Path(root), collection, default_visual_feature(collection, visual_feature))

    @property
    def collection_dir(self) -> Path:
        return self.root / self.collection

    @property
    def text_dir(self) -> Path:
        return self.collection_dir / "TextData"

    @property
    def feature_dir(self) -> Path:
        return self.collection_dir / "FeatureData"

    def caption_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.text_dir / f"{self.collection}{split}.caption.txt"

    @property
    def query_features(self) -> Path:
        return self.text_dir / f"roberta_{self.collection}_query_feat.hdf5"

    @property
    def teacher_query_features(self) -> Path:
        return self.text_dir / f"clip_ViT_B_32_{self.collection}_query_feat.hdf5"

    @property
    def moments(self) -> Path:
        return self.text_dir / f"{self.collection}_moments.jsonl"

    @property
    def bigfile_dir(self) -> Path:
        return self.feature_dir / self.visual_feature

    @property
    def teacher_video_features(self) -> Path:
        return self.feature_dir / f"new_clip_vit_32_{self.collection}_vid_features.hdf5"

    @property
    def synthetic_marker(self) -> Path:
        return self.collection_dir / SYNTHETIC_MARKER

    def is_synthetic(self) -> bool:
        return self.synthetic_marker.exists()

    def synthetic_info(self) -> dict | None:
        """Generator metadata (profile, scale, seed, ...) when the collection is synthetic."""
        if not self.is_synthetic():
            return None
        text = self.synthetic_marker.read_text().strip()
        return json.loads(text) if text else {}
