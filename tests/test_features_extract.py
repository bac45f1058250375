"""python -m benchmark.features (issue 18): raw videos and captions -> an MS-SL-layout collection.

Everything runs offline (HF_HUB_OFFLINE=1) on tiny randomly initialised CLIP and RoBERTa models
built from configs, and on a few tiny MPEG-4 videos written with PyAV
(tests/features_fixtures.py). The extracted collection must pass ``load_split`` and train
mean-pool, ms-sl and dl-dkd for one epoch through ``benchmark.train`` unchanged. Resume is
checked after a SIGKILL of a real extraction process and after an injected failure; bad videos
stop the run with their name, or are left out with ``--skip-bad``.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"             # before transformers / huggingface_hub read it
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from benchmark.data.bigfile import BigFile, read_video2frames  # noqa: E402
from benchmark.data.split import load_split  # noqa: E402
from benchmark.features import extract  # noqa: E402
from benchmark.features.cli import main as features_main  # noqa: E402
from benchmark.features.decode import sample_frames  # noqa: E402
from benchmark.features.inputs import parse_ratio, read_moment_spans, split_by_ratio  # noqa: E402
from benchmark.features.models import ImageEncoder, ImagePreprocess  # noqa: E402
from benchmark.train import main as train_main  # noqa: E402
from tests.features_fixtures import make_dataset, tiny_models, write_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLLECTION = "mine"
FEATURE = "clip_vit_b32"
TEACHER = f"new_clip_vit_32_{COLLECTION}_vid_features.hdf5"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features-assets")
    clip, roberta = tiny_models(root)
    return {"clip": clip, "roberta": roberta, **make_dataset(root, n_videos=6)}


def video_args(assets, out: Path, *extra: str) -> list[str]:
    return ["from-videos", "--videos", str(assets["videos"]), "--captions", str(assets["captions"]),
            "--split-ratio", "0.5,0.25,0.25", "--moments", str(assets["moments"]),
            "--collection", COLLECTION, "--out", str(out), "--clip-model", str(assets["clip"]),
            "--device", "cpu", "--batch-size", "2", *extra]


def text_args(assets, out: Path, *extra: str) -> list[str]:
    return ["texts", "--collection", COLLECTION, "--out", str(out), "--clip-model", str(assets["clip"]),
            "--text-model", str(assets["roberta"]), "--device", "cpu", "--batch-size", "5", *extra]


@pytest.fixture(scope="module")
def extracted(assets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features-out")
    assert features_main(video_args(assets, out)) == 0
    assert features_main(text_args(assets, out)) == 0
    return out


def teacher_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle[key][...] for key in handle}


# -- the collection ------------------------------------------------------------------------

def test_layout_and_frame_counts(extracted):
    c = extracted / COLLECTION
    bigfile = BigFile(c / "FeatureData" / FEATURE)
    teacher = teacher_arrays(c / "FeatureData" / TEACHER)
    video_frames = read_video2frames(bigfile.video2frames_file)
    assert sorted(teacher) == sorted(video_frames) == [f"v{i}" for i in range(6)]
    for video, frames in video_frames.items():
        assert teacher[video].shape == (len(frames), 8)               # counts agree
        np.testing.assert_array_equal(bigfile.read(video), teacher[video])   # student = CLIP
    # 2.0 s .. 5.9 s videos at one frame per 1.5 s (segment centres inside the video)
    assert [len(video_frames[f"v{i}"]) for i in range(4)] == [1, 2, 3, 4]
    report = json.loads((c / "features_report.json").read_text())
    assert report["videos"] == 6 and report["skipped_bad_videos"] == {}
    assert not (c / extract.WORK_DIR).exists()                          # work dir cleaned up
    with h5py.File(c / "TextData" / f"roberta_{COLLECTION}_query_feat.hdf5", "r") as h:
        assert h["v0#0"].ndim == 2 and h["v0#0"].shape[1] == 16       # (L, d), <s> and </s> in
    with h5py.File(c / "TextData" / f"clip_ViT_B_32_{COLLECTION}_query_feat.hdf5", "r") as h:
        assert h["v0#0"].shape == (1, 8)


def test_load_split_accepts_every_split(extracted):
    for split in ("train", "val", "test"):
        data = load_split(extracted, COLLECTION, split, visual_feature=FEATURE,
                          requires=frozenset({"clips", "teacher"}))
        assert data.dims.video == 8 and data.dims.teacher == 8 and data.dims.query == 16
        assert data.mv is not None and np.all((data.mv > 0) & (data.mv <= 1))


@pytest.mark.parametrize("method", ["dl-dkd", "mean-pool", "ms-sl"])
def test_train_one_epoch_on_the_extracted_collection(extracted, method, tmp_path, capsys):
    record = tmp_path / "record.json"
    rc = train_main(["--method", method, "--collection", COLLECTION, "--data-root", str(extracted),
                     "--visual-feature", FEATURE, "--epochs", "1", "--device", "cpu",
                     "--runs-dir", str(tmp_path / "runs"), "--json-out", str(record)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(record.read_text())
    assert data["epochs_run"] == 1 and data["test_by_mv"] is not None


# -- another student backbone: same frames, other features ----------------------------------

class _PixelMean(ImageEncoder):
    """A stand-in for a timm/torchvision backbone: other preprocessing, 3-d features."""

    def __init__(self) -> None:
        import torch

        self.name, self.dim, self.device = "test:pixel-mean", 3, torch.device("cpu")
        self.preprocess = ImagePreprocess(40, 36, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def _forward(self, pixels):
        return pixels.mean(dim=(2, 3))


def test_other_student_backbone_has_the_teacher_frame_counts(assets, tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "image_encoder", lambda spec, clip, device: _PixelMean())
    assert features_main(video_args(assets, tmp_path, "--student", "test:pixel-mean")) == 0
    c = tmp_path / COLLECTION
    bigfile = BigFile(c / "FeatureData" / "test_pixel-mean")
    teacher = teacher_arrays(c / "FeatureData" / TEACHER)
    assert bigfile.dim == 3
    assert _frame_counts(bigfile) == {v: len(a) for v, a in teacher.items()}


def test_missing_backbone_library_is_a_clear_error(assets, tmp_path, capsys):
    try:
        import timm  # noqa: F401
        pytest.skip("timm is installed here")
    except ImportError:
        pass
    assert features_main(video_args(assets, tmp_path, "--student", "timm:resnet18")) == 2
    err = capsys.readouterr().err
    assert "needs timm" in err and "not part of the features extra" in err


def test_unloadable_model_is_named(assets, tmp_path, capsys):
    assert features_main(video_args(assets, tmp_path, "--clip-model", str(tmp_path / "nope"))) == 2
    assert "cannot load the CLIP model" in capsys.readouterr().err


# -- resume ---------------------------------------------------------------------------------

KILLED_RUN = """
import sys, time
from benchmark.features import extract
from benchmark.features.cli import main
extract.after_unit = lambda unit: time.sleep(0.4)
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_matches_an_uninterrupted_run(assets, extracted, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, *video_args(assets, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    work = out / COLLECTION / extract.WORK_DIR / f"videos-{FEATURE}"
    deadline = time.monotonic() + 120
    try:
        while len(list(work.glob("*.npz"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no shards appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    done = len(list(work.glob("*.npz")))
    assert 2 <= done < 6
    teacher_file = out / COLLECTION / "FeatureData" / TEACHER
    assert not teacher_file.exists()                    # outputs appear only when complete

    encoded: list[str] = []
    monkeypatch.setattr(extract, "after_unit", encoded.append)
    assert features_main(video_args(assets, out)) == 0
    assert len(encoded) == 6 - done                     # done ids skipped
    reference = extracted / COLLECTION / "FeatureData"
    got, want = teacher_arrays(teacher_file), teacher_arrays(
        reference / TEACHER)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    assert not (out / COLLECTION / extract.WORK_DIR).exists()
    resumed, clean = BigFile(out / COLLECTION / "FeatureData" / FEATURE), BigFile(reference / FEATURE)
    frames = read_video2frames(clean.video2frames_file)
    assert read_video2frames(resumed.video2frames_file) == frames   # rows may sit in another order
    for video in frames:
        np.testing.assert_array_equal(resumed.read(video), got[video])
    assert features_main(text_args(assets, out)) == 0
    load_split(out, COLLECTION, "train", visual_feature=FEATURE, requires=frozenset({"teacher"}))


class _Injected(RuntimeError):
    pass


def test_texts_resume_after_an_injected_failure(assets, extracted, tmp_path, monkeypatch):
    out = tmp_path / "texts"
    shutil.copytree(extracted / COLLECTION / "TextData", out / COLLECTION / "TextData",
                    ignore=shutil.ignore_patterns("*.hdf5"))
    calls: list[str] = []

    def fail_second(unit: str) -> None:
        calls.append(unit)
        if len(calls) == 2:
            raise _Injected(unit)

    monkeypatch.setattr(extract, "after_unit", fail_second)
    with pytest.raises(_Injected):
        features_main(text_args(assets, out, "--only", "roberta"))
    target = out / COLLECTION / "TextData" / f"roberta_{COLLECTION}_query_feat.hdf5"
    assert not target.exists()
    calls.clear()
    monkeypatch.setattr(extract, "after_unit", calls.append)
    assert features_main(text_args(assets, out, "--only", "roberta")) == 0
    assert len(calls) == 1                      # 12 captions in batches of 5: 2 done, 1 left
    got = teacher_arrays(target)
    want = teacher_arrays(extracted / COLLECTION / "TextData" / target.name)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_resume_refuses_other_settings(assets, tmp_path, monkeypatch, capsys):
    def stop(unit: str) -> None:
        raise _Injected(unit)

    monkeypatch.setattr(extract, "after_unit", stop)
    with pytest.raises(_Injected):
        features_main(video_args(assets, tmp_path))
    monkeypatch.setattr(extract, "after_unit", lambda unit: None)
    assert features_main(video_args(assets, tmp_path, "--fps", "1")) == 2
    assert "other settings" in capsys.readouterr().err


# -- bad videos -------------------------------------------------------------------------------

@pytest.fixture
def with_bad_video(assets, tmp_path) -> dict[str, Path]:
    videos = tmp_path / "videos"
    shutil.copytree(assets["videos"], videos)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    captions = tmp_path / "captions.txt"
    captions.write_text(assets["captions"].read_text() + "broken#0 a person opens the door\n"
                        + "broken#1 the dog sits\n")
    return {**assets, "videos": videos, "captions": captions, "moments": tmp_path / "none"}


def _bad_args(data, out, *extra):
    args = video_args(data, out, *extra)
    i = args.index("--moments")
    return args[:i] + args[i + 2:]


def test_bad_video_is_an_error_naming_it(with_bad_video, tmp_path, capsys):
    assert features_main(_bad_args(with_bad_video, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "'broken'" in err and "--skip-bad" in err


def test_bad_video_is_skipped_with_skip_bad(with_bad_video, tmp_path):
    out = tmp_path / "out"
    assert features_main(_bad_args(with_bad_video, out, "--skip-bad")) == 0
    report = json.loads((out / COLLECTION / "features_report.json").read_text())
    assert list(report["skipped_bad_videos"]) == ["broken"]
    captions = "".join((out / COLLECTION / "TextData" / f"{COLLECTION}{s}.caption.txt").read_text()
                       for s in ("train", "val", "test"))
    assert "broken#" not in captions and captions.count("\n") == 12
    assert "broken" not in read_video2frames(out / COLLECTION / "FeatureData" / FEATURE / "video2frames.txt")


def test_missing_video_file_is_bad(assets, tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text(assets["captions"].read_text() + "ghost#0 a dog\n")
    args = video_args({**assets, "captions": captions}, tmp_path / "out")
    i = args.index("--moments")
    assert features_main(args[:i] + args[i + 2:]) == 2
    assert "'ghost'" in capsys.readouterr().err


# -- adding teacher features to an existing MS-SL package -------------------------------------

def test_only_teacher_matches_an_existing_bigfile(assets, extracted, tmp_path):
    out = tmp_path / "package"
    shutil.copytree(extracted / COLLECTION, out / COLLECTION,
                    ignore=shutil.ignore_patterns("new_clip_*", "clip_ViT_*", "features_report.json"))
    v2f = out / COLLECTION / "FeatureData" / FEATURE / "video2frames.txt"
    bigfile = BigFile(v2f.parent)
    assert features_main(["from-videos", "--only", "teacher", "--videos", str(assets["videos"]),
                          "--collection", COLLECTION, "--out", str(out), "--visual-feature", FEATURE,
                          "--clip-model", str(assets["clip"]), "--device", "cpu"]) == 0
    assert features_main(text_args(assets, out, "--only", "teacher")) == 0
    teacher = teacher_arrays(out / COLLECTION / "FeatureData" / TEACHER)
    assert {v: len(a) for v, a in teacher.items()} == _frame_counts(bigfile)
    load_split(out, COLLECTION, "train", visual_feature=FEATURE, requires=frozenset({"teacher"}))


# -- small pieces -------------------------------------------------------------------------------

def test_time_grid(tmp_path):
    path = write_video(tmp_path / "v.mp4", seconds=4.0, fps=10)
    assert len(list(sample_frames(path))) == 3                 # centres 0.75, 2.25, 3.75 s < 4 s
    assert len(list(sample_frames(path, fps=2.0))) == 8
    assert len(list(sample_frames(path, count=5))) == 5


def test_split_ratio_is_seeded_and_by_video(assets):
    a = split_by_ratio(assets["captions"], parse_ratio("0.5,0.25,0.25"), seed=0)
    b = split_by_ratio(assets["captions"], parse_ratio("0.5,0.25,0.25"), seed=0)
    assert a == b
    videos = [set(a[s].video_ids()) for s in ("train", "val", "test")]
    assert [len(v) for v in videos] == [2, 2, 2]              # round(1.5) = 2 twice
    assert not (videos[0] & videos[1] or videos[0] & videos[2] or videos[1] & videos[2])
    same = split_by_ratio(assets["captions"], parse_ratio("0.7,0,0.3"), seed=0)
    assert same["val"] == same["test"]


def test_moment_spans_keep_hash_ids(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("# comment\nv0#0 1.0 2.5\nv0#enc#1 0 3 10\n")
    assert read_moment_spans(path) == {"v0#0": (1.0, 2.5, None), "v0#enc#1": (0.0, 3.0, 10.0)}


def test_throughput_script_runs(capsys):
    from benchmark.features.throughput import main as throughput_main

    assert throughput_main(["--arch", "tiny", "--videos", "2", "--seconds", "2", "--width", "64",
                            "--height", "48", "--batch-size", "4", "--threads", "1",
                            "--text-arch", "tiny"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["frames"] == 2 and result["encoder_only_frames_per_s"] > 0
    assert result["text_captions_per_s"] > 0


def test_missing_extra_is_said(monkeypatch, capsys):
    for module in ("benchmark.features.decode", "benchmark.features.extract"):
        monkeypatch.setitem(sys.modules, module, None)       # import fails as without the extra
    assert features_main(["texts", "--collection", "x", "--out", "y"]) == 2
    assert "needs the 'features' extra" in capsys.readouterr().err


@pytest.mark.gpu
def test_extraction_on_cuda_matches_cpu(assets, extracted, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    assert features_main(video_args(assets, tmp_path)[:-4] + ["--device", "cuda"]) == 0
    got = teacher_arrays(tmp_path / COLLECTION / "FeatureData" / TEACHER)
    want = teacher_arrays(extracted / COLLECTION / "FeatureData" / TEACHER)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-3, atol=1e-4)


def test_text_layer_choice(assets, extracted, tmp_path, capsys):
    out = tmp_path / "layer"
    shutil.copytree(extracted / COLLECTION / "TextData", out / COLLECTION / "TextData",
                    ignore=shutil.ignore_patterns("*.hdf5"))
    assert features_main(text_args(assets, out, "--only", "roberta", "--text-layer", "0")) == 0
    name = f"roberta_{COLLECTION}_query_feat.hdf5"
    embeddings = teacher_arrays(out / COLLECTION / "TextData" / name)
    last = teacher_arrays(extracted / COLLECTION / "TextData" / name)
    assert all(embeddings[k].shape == last[k].shape for k in last)
    assert not np.allclose(embeddings["v0#0"], last["v0#0"])
    assert features_main(text_args(assets, out, "--only", "roberta", "--text-layer", "7",
                                   "--overwrite")) == 2
    assert "--text-layer 7" in capsys.readouterr().err
    # the refused run did no work, so its settings do not block the corrected command
    assert features_main(text_args(assets, out, "--only", "roberta", "--overwrite")) == 0


def test_finished_output_is_not_redone(assets, extracted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "again"
    shutil.copytree(extracted / COLLECTION, out / COLLECTION)
    encoded: list[str] = []
    monkeypatch.setattr(extract, "after_unit", encoded.append)
    assert features_main(video_args(assets, out)) == 0 and encoded == []
    assert "nothing to do" in capsys.readouterr().err
    captions = tmp_path / "captions.txt"                       # one more video asked for
    captions.write_text(assets["captions"].read_text() + "v9#0 a dog\n")
    args = video_args({**assets, "captions": captions}, out)
    i = args.index("--moments")
    assert features_main(args[:i] + args[i + 2:]) == 2
    assert "--overwrite" in capsys.readouterr().err and encoded == []


def test_finished_text_file_lacking_captions_asks_for_overwrite(assets, extracted, tmp_path, capsys):
    out = tmp_path / "texts-again"
    shutil.copytree(extracted / COLLECTION, out / COLLECTION)
    assert features_main(text_args(assets, out)) == 0
    assert "covers every caption; skipped" in capsys.readouterr().err
    train = out / COLLECTION / "TextData" / f"{COLLECTION}train.caption.txt"
    train.write_text(train.read_text() + "v0#7 a new caption\n")
    assert features_main(text_args(assets, out, "--only", "teacher")) == 2
    assert "'v0#7'" in capsys.readouterr().err


def _frame_counts(bigfile: BigFile) -> dict[str, int]:
    """Frames per video of a BigFile, from its video2frames.txt."""
    return {v: len(f) for v, f in read_video2frames(bigfile.video2frames_file).items()}
