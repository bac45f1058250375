"""The method plug-in contract (docs/architecture.md §3).

The training loop and the evaluator talk to a method through exactly four calls:
``encode_queries``, ``encode_videos``, ``score`` and ``compute_loss``. Everything else about a
method is private to it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar, Literal, Sequence

import torch
from torch import Tensor, nn

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch

#: Optional inputs a method may ask ``load_split`` to open or compute.
#: "clips": the 32-clip sequence (MS-SL); "teacher": CLIP teacher features (training splits);
#: "teacher_length": resample student frames to the teacher length first (DL-DKD++ §1.3 step 4);
#: "teacher_first_n": a teacher sequence longer than the student's keeps its first n frames (the
#: DL-DKD ICCV collate, §1.3 step 5) instead of being binned down to n (§6.8 item 6).
KNOWN_REQUIREMENTS = frozenset({"clips", "teacher", "teacher_length", "teacher_first_n"})


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Base of every method's frozen config dataclass. Fields carry reference defaults."""


@dataclass(frozen=True)
class FeatureDims:
    """Feature sizes read from the data files, never from constants."""

    query: int                      # d_q: RoBERTa token size (768 TVR, 1024 AN/Charades)
    video: int                      # d_v: visual feature size (3072 TVR, 1024 AN/Charades)
    teacher: int | None = None      # d_t: CLIP size (512) when teacher files are opened
    max_frames: int = 128           # max_ctx_l
    max_query_tokens: int = 30      # max_desc_l
    num_clips: int = 32             # map_size


#: How schedules read time (``train.schedule_clock``; docs/architecture.md §5.1):
#: ``"epoch"`` — the reference's: t = the 0-based epoch, one value per epoch, so a schedule's
#: curve is tied to absolute epochs whatever the run length; ``"progress"`` — t = p · E_ref,
#: read per optimiser step, with p the fraction of the run's planned steps done (0 at the first
#: step, 1 at the last) and E_ref the recipe's epoch count, so a run of any length traverses
#: the whole reference curve.
ScheduleClock = Literal["epoch", "progress"]
SCHEDULE_CLOCKS: tuple[ScheduleClock, ...] = ("epoch", "progress")


@dataclass(frozen=True)
class Progress:
    """Where training is; every schedule is a pure function of this, through :attr:`time`
    and :attr:`span` (the clock lives here and nowhere else)."""

    epoch: int             # 0-based, as the reference schedules count
    num_epochs: int
    step: int              # optimiser steps already taken
    steps_per_epoch: int
    clock: ScheduleClock = "epoch"
    reference_epochs: int | None = None   # E_ref, the recipe's epochs; None: num_epochs

    def __post_init__(self) -> None:
        if self.clock not in SCHEDULE_CLOCKS:
            raise ValueError(f"Progress.clock must be one of {SCHEDULE_CLOCKS}, got {self.clock!r}")
        if self.reference_epochs is not None and self.reference_epochs < 1:
            raise ValueError(f"Progress.reference_epochs must be >= 1, got {self.reference_epochs}")

    @property
    def fraction(self) -> float:
        """Progress through the whole run in [0, 1] at step granularity."""
        total = max(self.num_epochs * self.steps_per_epoch, 1)
        return min(self.step / total, 1.0)

    @property
    def span(self) -> int:
        """The length, in schedule time, of the curve the run traverses: ``num_epochs`` on
        the epoch clock, E_ref on the progress clock (``n`` of the run-relative kinds)."""
        if self.clock == "epoch" or self.reference_epochs is None:
            return self.num_epochs
        return self.reference_epochs

    @property
    def time(self) -> float:
        """Schedule time t in (reference) epochs: the 0-based epoch on the epoch clock; on the
        progress clock t = p · E_ref with p = step / (planned steps − 1), so the first step
        reads t = 0 and the last t = E_ref."""
        if self.clock == "epoch":
            return float(self.epoch)
        last = self.num_epochs * self.steps_per_epoch - 1
        p = 1.0 if last <= 0 else min(self.step / last, 1.0)
        return p * self.span

    def to_schedule_time(self, epochs: float) -> float:
        """A duration of ``epochs`` run epochs in schedule time (early-stop patience reads
        it): unchanged on the epoch clock, × E_ref / num_epochs on the progress clock."""
        if self.clock == "epoch":
            return epochs
        return epochs * self.span / max(self.num_epochs, 1)


@dataclass(frozen=True)
class Encoding:
    """A frozen bundle of tensors whose first dimension indexes items (queries or videos).

    Methods subclass it with their own fields. Fields that are None are carried through.
    The evaluator uses only ``len``, ``take``, ``to`` and ``cat``.
    """

    def _tensors(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __len__(self) -> int:
        for value in self._tensors().values():
            if isinstance(value, Tensor):
                return value.shape[0]
        raise ValueError(f"{type(self).__name__} holds no tensor")

    def take(self, index: Tensor | slice) -> "Encoding":
        return replace(self, **{k: (v[index] if isinstance(v, Tensor) else v)
                                for k, v in self._tensors().items()})

    def to(self, device) -> "Encoding":
        return replace(self, **{k: (v.to(device) if isinstance(v, Tensor) else v)
                                for k, v in self._tensors().items()})

    @classmethod
    def cat(cls, parts: Sequence["Encoding"]) -> "Encoding":
        """Concatenate along the item axis; tensors with different trailing lengths (e.g. the
        frame axis of video chunks) are zero-padded on dim 1 to the longest part."""
        if not parts:
            raise ValueError("cannot concatenate zero encodings")
        first = parts[0]
        out = {}
        for name, value in first._tensors().items():
            if not isinstance(value, Tensor):
                out[name] = value
                continue
            items = [getattr(p, name) for p in parts]
            if value.dim() >= 2 and len({t.shape[1] for t in items}) > 1:
                width = max(t.shape[1] for t in items)
                items = [torch.nn.functional.pad(t, [0, 0] * (t.dim() - 2) + [0, width - t.shape[1]])
                         for t in items]
            out[name] = torch.cat(items, dim=0)
        return replace(first, **out)


class PRVRMethod(nn.Module):
    """Base class of every PRVR method.

    Subclasses set ``config_cls`` and, when they need optional inputs, ``requires`` (or
    override ``requirements`` when they depend on the config).
    """

    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    requires: ClassVar[frozenset[str]] = frozenset()
    #: How the training collate orders a batch (docs/methods.md §1.4): MS-SL sorts videos by
    #: frame count, DL-DKD/++ by caption count (which DL-DKD++'s soft-target partition sees).
    batch_sort: ClassVar[str] = "frames"   # "frames" | "captions"

    def __init__(self, config: MethodConfig, dims: FeatureDims) -> None:
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.dims = dims

    @classmethod
    def requirements(cls, config: MethodConfig) -> frozenset[str]:
        """Optional inputs to open for this config (subset of KNOWN_REQUIREMENTS)."""
        return cls.requires

    def encode_queries(self, queries: QueryBatch) -> Encoding:
        raise NotImplementedError

    def encode_videos(self, videos: VideoBatch) -> Encoding:
        raise NotImplementedError

    def score(self, q: Encoding, v: Encoding) -> dict[str, Tensor]:
        """Named (len(q), len(v)) score matrices; "score" ranks videos. Must be separable:
        a pair's value depends only on that query and that video."""
        raise NotImplementedError

    def compute_loss(self, batch: TrainBatch, progress: Progress) -> dict[str, Tensor]:
        """"loss" is back-propagated; "loss_*" terms and scalar diagnostics are logged."""
        raise NotImplementedError
