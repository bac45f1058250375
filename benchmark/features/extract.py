"""The two jobs of ``python -m benchmark.features``: ``from_videos`` and ``texts``.

Both follow the same shape (shards.py): list the units still to do (ids not in the work
directory's shards), encode them in batches, write one shard per unit (a video) or per batch
(captions), then assemble the output files from every shard, atomically, and remove the work
directory. A killed run is resumed by running the same command again. A work directory made
with other settings (models, fps, student, layer) is refused rather than mixed in.

Outputs (paths from :class:`benchmark.data.layout.Layout`):

* ``from_videos``: ``FeatureData/new_clip_vit_32_<c>_vid_features.hdf5`` (teacher, video_id ->
  (T, 512)), ``FeatureData/<visual_feature>/`` (student BigFile, the same T frames per video),
  ``TextData/<c>{train,val,test}.caption.txt``, ``TextData/<c>_moments.jsonl`` (with
  ``--moments``) and ``<c>/features_report.json`` (settings, counts, skipped videos, timing).
  With ``only="teacher"`` the teacher file alone is written for the videos of an existing
  BigFile, with exactly its frame count per video (spread evenly over each video).
* ``texts``: ``TextData/roberta_<c>_query_feat.hdf5`` (cap_id -> (L, d)) and
  ``TextData/clip_ViT_B_32_<c>_query_feat.hdf5`` (cap_id -> (1, 512)) for every caption of the
  collection's caption files.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from benchmark.console import TrainingConsole, write_line
from benchmark.data.annotations import Moments, write_moments
from benchmark.data.bigfile import read_video2frames
from benchmark.data.errors import DataError
from benchmark.data.layout import SPLITS, Layout
from benchmark.data.text import read_captions, video_id_of

from .decode import DEFAULT_FPS, BadVideoError, find_videos
from .inputs import (
    SplitCaptions,
    check_key,
    check_splits,
    parse_ratio,
    read_moment_spans,
    read_splits,
    split_by_ratio,
)
from .models import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_TEXT_MODEL,
    ClipImageEncoder,
    ClipTextEncoder,
    ImageEncoder,
    TokenEncoder,
    image_encoder,
    resolve_device,
)
from .pipeline import VideoTask, decoded
from .shards import ShardStore, write_text_atomic
from .writers import write_bigfile, write_keyed_hdf5

WORK_DIR = ".features-work"
REPORT = "features_report.json"

#: Called after each finished unit with its id (tests inject failures here).
after_unit: Callable[[str], None] = lambda unit_id: None  # noqa: E731


@dataclass
class VideoJob:
    """Settings of ``from-videos``; the ones that change the numbers are checked on resume."""

    videos: str
    collection: str
    out: str
    captions: str | None = None
    split_ratio: str | None = None
    split_files: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    moments: str | None = None
    fps: float = DEFAULT_FPS
    clip_model: str = DEFAULT_CLIP_MODEL
    student: str = "clip"
    visual_feature: str | None = None
    batch_size: int = 64
    device: str = "auto"
    skip_bad: bool = False
    overwrite: bool = False
    only: str | None = None            # None (teacher + student) or "teacher"

    def numbers_key(self) -> dict:
        """What must match between a work directory and a resuming run."""
        return {"fps": self.fps, "clip_model": self.clip_model, "student": self.student,
                "only": self.only}

    def feature_name(self) -> str:
        if self.visual_feature:
            return self.visual_feature
        if self.student == "clip":
            return "clip_vit_b32"
        return self.student.replace(":", "_").replace("/", "_")


@dataclass
class TextJob:
    collection: str
    out: str
    text_model: str = DEFAULT_TEXT_MODEL
    clip_model: str = DEFAULT_CLIP_MODEL
    text_layer: int = -1
    max_tokens: int = 64
    batch_size: int = 64
    device: str = "auto"
    overwrite: bool = False
    only: str | None = None            # None (both), "roberta" or "teacher"


def _say(message: str) -> None:
    write_line(f"features: {message}")


class _WorkDir:
    """A ShardStore plus the settings it was made with (``job.json``)."""

    def __init__(self, directory: Path, settings: dict) -> None:
        self.store = ShardStore(directory)
        settings_file = directory / "job.json"
        if settings_file.is_file():
            saved = json.loads(settings_file.read_text())
            if saved != settings and not self.store.shards():       # no work done yet: reuse
                write_text_atomic(settings_file, json.dumps(settings, sort_keys=True))
            elif saved != settings:
                raise DataError(directory, f"holds a half-done extraction made with other "
                                           f"settings ({saved}, now {settings}); rerun with those "
                                           "settings to finish it, or delete the directory")
        else:
            write_text_atomic(settings_file, json.dumps(settings, sort_keys=True))


def _collect_splits(job: VideoJob) -> dict[str, SplitCaptions]:
    if job.split_files and job.captions:
        raise DataError(None, "give either --captions with --split-ratio or the three split "
                              "caption files, not both")
    if job.split_files:
        missing = [s for s in SPLITS if s not in job.split_files]
        if missing:
            raise DataError(None, f"split caption files missing for {missing}")
        splits = read_splits(job.split_files)
    elif job.captions:
        if not job.split_ratio:
            raise DataError(job.captions, "one caption file needs --split-ratio TRAIN,VAL,TEST")
        splits = split_by_ratio(job.captions, parse_ratio(job.split_ratio), job.seed)
    else:
        raise DataError(None, "no captions: pass --captions FILE --split-ratio R, or "
                              "--train-captions/--val-captions/--test-captions")
    check_splits(splits, job.captions or job.split_files.get("train"))
    return splits


class _Frames:
    """Preprocessing for every encoder (one call when they share it) and batched encoding."""

    def __init__(self, encoders: list[ImageEncoder]) -> None:
        self.encoders = encoders
        self.preprocess = {id(e.preprocess): e.preprocess for e in encoders}
        self.shared = len(self.preprocess) == 1

    def transform(self, image):
        if self.shared:
            return self.encoders[0].preprocess(image)
        return {key: p(image) for key, p in self.preprocess.items()}

    def encode(self, frames: list) -> list[np.ndarray]:
        """Shapes: n frames -> one (n, d_e) array per encoder."""
        return [e.encode(frames if self.shared else [f[id(e.preprocess)] for f in frames])
                for e in self.encoders]


def from_videos(job: VideoJob) -> dict:
    """Run (or resume) ``from-videos``; returns the report that is also written to disk."""
    layout = Layout(Path(job.out), job.collection, job.feature_name())
    check_key("--collection", job.collection, "collection")
    if not job.fps > 0 or not math.isfinite(job.fps):
        raise DataError(None, f"--fps must be a positive number, got {job.fps}")
    if job.batch_size < 1:
        raise DataError(None, f"--batch-size must be positive, got {job.batch_size}")
    teacher_only = job.only == "teacher"
    counts: dict[str, int] | None = None
    splits: dict[str, SplitCaptions] = {}
    if teacher_only:                      # an existing MS-SL package: match its frame counts
        v2f = layout.bigfile_dir / "video2frames.txt"
        if not v2f.is_file():
            raise DataError(v2f, "--only teacher adds teacher frames to an existing BigFile; "
                                 "name it with --visual-feature (file not found)")
        counts = {video: len(frames) for video, frames in read_video2frames(v2f).items()}
        needed = list(counts)
    else:
        splits = _collect_splits(job)
        needed = list(dict.fromkeys(v for s in SPLITS for v in splits[s].video_ids()))
    spans = read_moment_spans(job.moments) if job.moments else None
    if spans is not None:
        cap_ids = [c for s in SPLITS for c in splits[s].cap_ids]
        missing = [c for c in cap_ids if c not in spans]
        if missing:
            raise DataError(job.moments, f"no moment for {len(missing)} of {len(cap_ids)} "
                                         "captions (--moments must cover every caption)",
                            key=missing[0])

    outputs = [layout.teacher_video_features] + ([] if teacher_only else [layout.bigfile_dir / "shape.txt"])
    work_dir = layout.collection_dir / WORK_DIR / f"videos-{layout.visual_feature}"
    if all(p.exists() for p in outputs) and not work_dir.exists() and not job.overwrite:
        with h5py.File(layout.teacher_video_features, "r") as handle:
            lacking = [v for v in needed if v not in handle]
        if lacking:
            raise DataError(layout.teacher_video_features,
                            f"a finished extraction without {len(lacking)} of the {len(needed)} "
                            "videos now asked for; pass --overwrite to extract them all again",
                            key=lacking[0])
        _say(f"{layout.collection_dir} already holds the video features ({outputs[0].name}); "
             "nothing to do (--overwrite to extract again)")
        report_file = layout.collection_dir / REPORT
        return json.loads(report_file.read_text()) if report_file.is_file() else {}
    files = find_videos(job.videos)
    work = _WorkDir(work_dir, job.numbers_key())
    done = work.store.done_ids()
    todo = [v for v in needed if v not in done]
    _say(f"{len(needed)} videos: {len(needed) - len(todo)} already done (resumed), {len(todo)} to extract")

    bad: dict[str, str] = {}
    frames_total = 0
    seconds = 0.0
    device = resolve_device(job.device)
    if todo:
        clip = ClipImageEncoder(job.clip_model, device)
        encoders: list[ImageEncoder] = [clip]
        if not teacher_only and job.student != "clip":
            encoders.append(image_encoder(job.student, clip, device))
        _say(f"encoders: {', '.join(f'{e.name} ({e.dim}-d)' for e in encoders)} on {device}; "
             f"{'frame counts of ' + layout.visual_feature if teacher_only else f'{job.fps:.4g} frames/s'}")
        frames = _Frames(encoders)
        tasks = [VideoTask(v, files.get(v), None if counts is None else counts[v]) for v in todo]
        started = time.perf_counter()
        with TrainingConsole(1, len(todo), title="from-videos", what=job.collection) as console:
            console.start_epoch(0)
            parts: list[list[np.ndarray]] = [[] for _ in encoders]
            for chunk in decoded(tasks, fps=job.fps, transform=frames.transform,
                                 chunk=job.batch_size, missing_source=job.videos):
                video_id = chunk.video_id
                if chunk.error is not None:
                    parts = [[] for _ in encoders]
                    if not job.skip_bad:
                        exc = chunk.error
                        raise BadVideoError(exc.path, f"video {video_id!r}: {exc.problem} "
                                                      "(--skip-bad leaves it out)", key=exc.key)
                    bad[video_id] = str(chunk.error)
                    console.warn(f"skipped bad video {video_id!r}: {chunk.error}")
                    console.advance(1, samples=0)
                    continue
                if chunk.frames:
                    for part, encoded in zip(parts, frames.encode(chunk.frames)):
                        part.append(encoded)
                if chunk.info is None:
                    continue
                features = [np.concatenate(p) for p in parts]
                parts = [[] for _ in encoders]
                fields = {"teacher": [features[0]],
                          "duration": [np.array([[chunk.info.duration]], dtype=np.float32)]}
                if len(features) > 1:
                    fields["student"] = [features[1]]
                work.store.write([video_id], fields)
                frames_total += features[0].shape[0]
                console.advance(1, samples=features[0].shape[0])
                after_unit(video_id)
        seconds = time.perf_counter() - started

    kept = [v for v in needed if v not in bad]
    if not kept:
        raise DataError(job.videos, "no video could be extracted")
    report = _finish_videos(job, layout, work, kept, bad, splits, spans, teacher_only)
    report.update(frames_extracted_now=frames_total, seconds_now=round(seconds, 3),
                  frames_per_second_now=round(frames_total / seconds, 2) if seconds else None)
    write_text_atomic(layout.collection_dir / REPORT, json.dumps(report, indent=2, sort_keys=True) + "\n")
    work.store.remove()
    _say(f"done: {report['videos']} videos, {report['frames']} frames"
         + (f", {len(bad)} bad video(s) skipped" if bad else "")
         + (f"; {frames_total} frames in {seconds:.1f} s ({frames_total / seconds:.1f} frames/s)"
            if seconds else ""))
    return report


def _finish_videos(job: VideoJob, layout: Layout, work: _WorkDir, kept: list[str],
                   bad: dict[str, str], splits: dict[str, SplitCaptions],
                   spans: dict | None, teacher_only: bool) -> dict:
    wanted = set(kept)
    names = ["teacher", "duration"] + ([] if teacher_only or job.student == "clip" else ["student"])
    durations: dict[str, float] = {}
    lengths: dict[str, int] = {}

    def teacher_items():
        for video_id, arrays in work.store.iterate(names):
            if video_id in wanted:
                durations[video_id] = float(arrays["duration"][0, 0])
                lengths[video_id] = arrays["teacher"].shape[0]
                yield video_id, arrays["teacher"]

    write_keyed_hdf5(layout.teacher_video_features, teacher_items())
    missing = wanted - set(lengths)
    if missing:                     # cannot happen unless the work directory was edited
        raise DataError(work.store.directory, "shards lack finished videos", key=sorted(missing)[0])
    report: dict = {"collection": job.collection, "videos": len(kept),
                    "frames": int(sum(lengths.values())), "skipped_bad_videos": bad,
                    "teacher_file": str(layout.teacher_video_features),
                    "settings": {k: v for k, v in asdict(job).items() if k not in ("overwrite",)}}
    if teacher_only:
        return report
    student_key = "teacher" if job.student == "clip" else "student"
    write_bigfile(layout.bigfile_dir, ((v, a[student_key]) for v, a in work.store.iterate(names)
                                       if v in wanted))
    report["visual_feature"] = layout.visual_feature
    dropped = set(bad)
    for split in SPLITS:
        captions = splits[split].without(dropped)
        if not captions.cap_ids:
            raise DataError(layout.caption_file(split), f"the {split} split has no captions left "
                                                        "after skipping bad videos")
        write_text_atomic(layout.caption_file(split), captions.text())
        report[f"{split}_queries"] = len(captions.cap_ids)
        report[f"{split}_videos"] = len(captions.video_ids())
    if spans is not None:
        cap_ids = list(dict.fromkeys(c for s in SPLITS for c in splits[s].without(dropped).cap_ids))
        ts = np.array([spans[c][:2] for c in cap_ids], dtype=np.float64).reshape(-1, 2)
        duration = np.array([spans[c][2] if spans[c][2] is not None else durations[video_id_of(c)]
                             for c in cap_ids], dtype=np.float64)
        table = Moments(cap_ids, ts, duration, source=str(job.moments))
        write_moments(table, layout.moments)
        report["moments"] = str(layout.moments)
        report["mean_mv"] = round(float(table.mv().mean()), 6)
    return report


def _collection_captions(layout: Layout) -> tuple[list[str], list[str]]:
    """Every caption of the collection's split files (val may repeat test), in order."""
    texts: dict[str, str] = {}
    found = False
    for split in SPLITS:
        path = layout.caption_file(split)
        if not path.is_file():
            continue
        found = True
        captions = read_captions(path)
        for cap_id, text in zip(captions.cap_ids, captions.texts):
            check_key(path, cap_id, "cap_id")
            if texts.setdefault(cap_id, text) != text:
                raise DataError(path, "cap_id has another caption in an earlier split file", key=cap_id)
    if not found:
        raise DataError(layout.text_dir, f"no caption files ({layout.collection}"
                                         "{train,val,test}.caption.txt); run from-videos first")
    return list(texts), list(texts.values())


def texts(job: TextJob) -> dict:
    """Run (or resume) ``texts``; returns a summary."""
    layout = Layout(Path(job.out), job.collection, "unused")
    if job.batch_size < 1:
        raise DataError(None, f"--batch-size must be positive, got {job.batch_size}")
    cap_ids, captions = _collection_captions(layout)
    device = resolve_device(job.device)
    summary: dict = {"captions": len(cap_ids)}
    kinds = ["roberta", "teacher"] if job.only is None else [job.only]
    for kind in kinds:
        target = layout.query_features if kind == "roberta" else layout.teacher_query_features
        settings = ({"model": job.text_model, "layer": job.text_layer, "max_tokens": job.max_tokens}
                    if kind == "roberta" else {"model": job.clip_model})
        work_dir = layout.collection_dir / WORK_DIR / f"texts-{kind}"
        if target.exists() and not work_dir.exists() and not job.overwrite:
            with h5py.File(target, "r") as handle:
                lacking = [c for c in cap_ids if c not in handle]
            if lacking:
                raise DataError(target, f"exists without {len(lacking)} of the {len(cap_ids)} "
                                        "captions of the caption files; pass --overwrite to "
                                        "extract them all again", key=lacking[0])
            _say(f"{target} exists and covers every caption; skipped (--overwrite to extract again)")
            continue
        work = _WorkDir(work_dir, settings)
        done = work.store.done_ids()
        todo = [i for i, c in enumerate(cap_ids) if c not in done]
        todo.sort(key=lambda i: len(captions[i]))      # similar lengths per batch: less padding
        _say(f"{kind}: {len(cap_ids)} captions, {len(cap_ids) - len(todo)} already done, "
             f"{len(todo)} to encode")
        if todo:
            encoder = (TokenEncoder(job.text_model, device, layer=job.text_layer, max_tokens=job.max_tokens)
                       if kind == "roberta" else ClipTextEncoder(job.clip_model, device))
            batches = [todo[i:i + job.batch_size] for i in range(0, len(todo), job.batch_size)]
            started = time.perf_counter()
            with TrainingConsole(1, len(batches), title=f"texts ({kind})", what=job.collection) as console:
                console.start_epoch(0)
                for batch in batches:
                    encoded = encoder.encode([captions[i] for i in batch])
                    arrays = list(encoded) if kind == "roberta" else [row[None, :] for row in encoded]
                    ids = [cap_ids[i] for i in batch]
                    work.store.write(ids, {"features": arrays})
                    console.advance(1, samples=len(batch))
                    after_unit(ids[-1])
            seconds = time.perf_counter() - started
            summary[f"{kind}_captions_per_second"] = round(len(todo) / seconds, 2) if seconds else None
        wanted = set(cap_ids)
        written = write_keyed_hdf5(target, ((c, a["features"]) for c, a in work.store.iterate(["features"])
                                            if c in wanted))
        if written != len(wanted):
            raise DataError(work.store.directory, f"{written} of {len(wanted)} captions in the shards")
        work.store.remove()
        summary[kind] = str(target)
        _say(f"wrote {target} ({written} captions)")
    return summary
