"""Moments tables: M/V rule, converters, the CLI and the shipped real test-split tables."""
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark import moments as cli
from benchmark.data.annotations import (
    Moments,
    builtin_moments,
    builtin_name,
    convert,
    moment_video_ratio,
    read_moments,
    read_order,
    split_coverage,
    write_moments,
)
from benchmark.data.errors import DataError

ANNOTATIONS = Path("/work/shared/data/annotations")
BUILTIN = Path(__file__).resolve().parents[1] / "benchmark" / "data" / "builtin"
EDGES = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def five_bins(mv):
    """Right-closed (0,0.2] ... (0.8,1.0] counts; M/V = 0 falls in no bin (docs/datasets.md §1)."""
    which = np.searchsorted(EDGES, mv, side="left")          # edges[i-1] < mv <= edges[i] -> i
    return np.bincount(which, minlength=6)[1:].tolist()


# --- the M/V rule ----------------------------------------------------------------------------

def test_moment_video_ratio_hand_cases():
    ts = np.array([[2.0, 4.0],      # plain: 2/10
                   [4.0, 2.0],      # reversed -> swapped
                   [-1.0, 3.0],     # clipped at 0
                   [8.0, 12.0],     # clipped at T
                   [11.0, 12.0],    # entirely after T -> 0
                   [5.0, 5.0],      # zero length
                   [0.0, 90.71]])   # float-noise duration: 1 after rounding
    duration = np.array([10, 10, 10, 10, 10, 10, 90.71000000000001])
    mv = moment_video_ratio(ts, duration)
    assert mv.tolist() == [0.2, 0.2, 0.3, 0.2, 0.0, 0.0, 1.0]
    assert mv.dtype == np.float64


def test_moment_video_ratio_rounds_to_six_decimals():
    mv = moment_video_ratio(np.array([[0.0, 1.0]]), np.array([3.0]))
    assert mv.tolist() == [0.333333]
    # plain float division puts this moment just above the 0.2 edge; rounding puts it on it
    raw = (1.1 - 0.7) / 2.0
    assert raw > 0.2
    mv = moment_video_ratio(np.array([[0.7, 1.1]]), np.array([2.0]))
    assert mv[0] == 0.2 and five_bins(mv) == [1, 0, 0, 0, 0]


# --- converters on hand-written upstream files -----------------------------------------------

def test_tvr_groups_by_video_in_file_order(tmp_path):
    records = [("a", [0, 1], 10, "a0"), ("b", [1, 2], 20, "b0"), ("a", [2, 5], 10, "a1"),
               ("c", [0, 3], 30, "c0"), ("b", [4, 8], 20, "b1"), ("a", [3, 4], 10, "a2")]
    path = tmp_path / "tvr.jsonl"
    path.write_text("".join(json.dumps({"vid_name": v, "ts": ts, "duration": d, "desc": t,
                                        "type": "v", "desc_id": 9 - i}) + "\n"
                            for i, (v, ts, d, t) in enumerate(records)))
    m = convert("tvr", path)
    assert m.cap_ids == ["a#enc#0", "a#enc#1", "a#enc#2", "b#enc#0", "b#enc#1", "c#enc#0"]
    assert m.texts == ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert m.ts.tolist() == [[0, 1], [2, 5], [3, 4], [1, 2], [4, 8], [0, 3]]
    assert m.mv().tolist() == [0.1, 0.3, 0.1, 0.05, 0.2, 0.1]


def test_activitynet_with_order(tmp_path):
    data = {"v_1": {"duration": 100.0, "timestamps": [[0, 10], [50, 100]], "sentences": [" x", "y"]},
            "v_2": {"duration": 40.0, "timestamps": [[0, 40]], "sentences": ["z"]},
            "v_3": {"duration": 9.0, "timestamps": [[1, 2]], "sentences": ["w"]}}
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    assert convert("activitynet", path).cap_ids == ["v_1#enc#0", "v_1#enc#1", "v_2#enc#0", "v_3#enc#0"]
    gt = tmp_path / "order.gt.jsonl"
    gt.write_text("".join(json.dumps({"query_id": q, "gt_video_ids": [q[:3]]}) + "\n"
                          for q in ["v_2#enc#0", "v_1#enc#0", "v_1#enc#1"]))
    m = convert("activitynet", path, order=gt)
    assert m.cap_ids == ["v_2#enc#0", "v_1#enc#0", "v_1#enc#1"]
    assert m.duration.tolist() == [40.0, 100.0, 100.0]
    assert m.mv().tolist() == [1.0, 0.1, 0.5]
    captions = tmp_path / "order.caption.txt"
    captions.write_text("v_3#enc#0 w\nv_1#enc#1 y\n")
    assert convert("activitynet", path, order=captions).cap_ids == ["v_3#enc#0", "v_1#enc#1"]
    captions.write_text("v_3#enc#5 w\n")
    with pytest.raises(DataError, match=r"v_3#enc#5.*order.caption.txt"):
        convert("activitynet", path, order=captions)


def test_charades_with_csv_lengths(tmp_path):
    sta = tmp_path / "sta.txt"
    sta.write_text("AAAAA 1.0 3.0##person opens a door.\nAAAAA 5.0 4.0##person sits.\n"
                   "BBBBB 0 12.5##person, laughing, eats.\n")
    csv = tmp_path / "c.csv"
    csv.write_text('id,subject,descriptions,length\nAAAAA,X,"a, b; c",10.00\nBBBBB,Y,"q",12.0\n')
    m = convert("charades", sta, durations=csv)
    assert m.cap_ids == ["AAAAA#enc#0", "AAAAA#enc#1", "BBBBB#enc#0"]
    assert m.texts == ["person opens a door.", "person sits.", "person, laughing, eats."]
    assert m.mv().tolist() == [0.2, 0.1, 1.0]
    csv.write_text("id,length\nAAAAA,10\n")
    with pytest.raises(DataError, match=r"c\.csv.*BBBBB"):
        convert("charades", sta, durations=csv)
    with pytest.raises(DataError, match="durations"):
        convert("charades", sta)
    sta.write_text("AAAAA 1.0##oops\n")
    with pytest.raises(DataError, match=r"sta\.txt: line 1"):
        convert("charades", sta, durations=csv)


def test_write_read_round_trip_and_deterministic_gzip(tmp_path):
    m = Moments(["a#enc#0", "b#enc#0"], np.array([[0, 1.5], [2, 90.71]]),
                np.array([3.0, 90.71000000000001]))
    one = write_moments(m, tmp_path / "one.jsonl.gz").read_bytes()
    two = write_moments(m, tmp_path / "sub" / "two.jsonl.gz").read_bytes()
    assert one == two                                  # no mtime, no file name in the header
    back = read_moments(tmp_path / "one.jsonl.gz")
    assert back.cap_ids == m.cap_ids
    assert np.array_equal(back.ts, m.ts) and np.array_equal(back.duration, m.duration)
    plain = write_moments(m, tmp_path / "p.jsonl").read_text()
    assert gzip.decompress(one).decode() == plain
    assert json.loads(plain.splitlines()[1]) == {"cap_id": "b#enc#0", "ts": [2.0, 90.71],
                                                 "duration": 90.71000000000001}


def test_split_coverage():
    m = Moments(["a#enc#0", "a#enc#1"], np.array([[0, 1.0], [0, 2.0]]), np.array([4.0, 4.0]))
    assert split_coverage(m, ["a#enc#1", "a#enc#0"]).tolist() == [0.5, 0.25]
    assert split_coverage(m, ["z#enc#0"]) is None
    with pytest.raises(DataError, match="z#enc#0"):
        split_coverage(m, ["a#enc#0", "z#enc#0"])


def test_duplicate_cap_id_in_table(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"cap_id": "a#enc#0", "ts": [0, 1], "duration": 2}) + "\n"
                            for _ in range(2)))
    with pytest.raises(DataError, match=r"m\.jsonl.*a#enc#0.*twice"):
        read_moments(path)


def test_cli(tmp_path, capsys):
    path = tmp_path / "tvr.jsonl"
    path.write_text(json.dumps({"vid_name": "a", "ts": [1, 2], "duration": 4.0}) + "\n")
    out = tmp_path / "out.jsonl"
    assert cli.main(["--format", "tvr", "--input", str(path), "--out", str(out)]) == 0
    assert "1 queries, 1 videos" in capsys.readouterr().out
    assert read_moments(out).mv().tolist() == [0.25]
    assert cli.main(["--format", "charades", "--input", str(path), "--out", str(out)]) == 2
    assert "--durations" in capsys.readouterr().err


def test_builtin_absent_for_other_collections():
    assert builtin_moments("toy") is None


# --- the shipped tables of the real test splits ----------------------------------------------

HEADLINE = {  # docs/datasets.md §4.5 and §7
    "tvr": (2179, 10895, [9298, 1000, 320, 128, 149], 43),
    "activitynet": (4430, 15753, [6714, 3988, 2604, 1069, 1378], 494),
    "charades": (1334, 3720, [1077, 2113, 530, 0, 0], 0),
}


@pytest.mark.parametrize("collection", sorted(HEADLINE))
def test_builtin_tables_match_datasets_md(collection):
    m = builtin_moments(collection)
    videos, queries, bins, ones = HEADLINE[collection]
    assert len(m) == queries
    assert len({c.split("#", 1)[0] for c in m.cap_ids}) == videos
    mv = m.mv()
    assert five_bins(mv) == bins
    assert int((mv == 1.0).sum()) == ones
    assert all(re.fullmatch(r".+#enc#\d+", c) for c in m.cap_ids)


needs_annotations = pytest.mark.skipif(not ANNOTATIONS.is_dir(),
                                       reason="shared annotation files are absent")


def _upstream(collection):
    if collection == "tvr":
        return ["--format", "tvr", "--input", str(ANNOTATIONS / "tvr/tvr_val_release.jsonl")]
    if collection == "activitynet":
        return ["--format", "activitynet", "--input", str(ANNOTATIONS / "activitynet/val.json"),
                "--order", str(ANNOTATIONS / "activitynet/activitynetdenseval.gt.jsonl")]
    return ["--format", "charades", "--input", str(ANNOTATIONS / "charades/charades_sta_test.txt"),
            "--durations", str(ANNOTATIONS / "charades/Charades_v1_test.csv")]


@needs_annotations
@pytest.mark.parametrize("collection", sorted(HEADLINE))
def test_converter_reproduces_builtin_and_derived(collection, tmp_path):
    out = tmp_path / builtin_name(collection)
    assert cli.main(_upstream(collection) + ["--out", str(out)]) == 0
    assert out.read_bytes() == (BUILTIN / builtin_name(collection)).read_bytes()
    derived = [json.loads(line) for line in
               (ANNOTATIONS / collection / "derived" / f"{collection}_prvr_test_moments.jsonl")
               .read_text().splitlines()]
    m = read_moments(out)
    assert m.cap_ids == [r["cap_id"] for r in derived]
    assert np.array_equal(m.ts, np.array([r["ts"] for r in derived], dtype=np.float64))
    assert np.array_equal(m.duration, np.array([r["duration"] for r in derived], dtype=np.float64))
    np.testing.assert_allclose(m.mv(), [r["mv"] for r in derived], rtol=0, atol=1e-6)


def _words(text):
    return " ".join(re.sub(r"[^A-Za-z0-9]", " ", text).split())


@needs_annotations
@pytest.mark.parametrize("collection,gt", [("tvr", "tvr/tvrdenseval_v.gt.jsonl"),
                                           ("activitynet", "activitynet/activitynetdenseval.gt.jsonl"),
                                           ("charades", "charades/charadesdenseval.gt.jsonl")])
def test_cap_id_maps_to_the_moment_of_its_caption(collection, gt):
    """The k-th moment of a video carries the text of MS-SL's cap_id ``<video>#enc#<k>``
    (docs/datasets.md §5): compare the converter's upstream text with the original captions."""
    args = _upstream(collection)
    kw = {"durations": args[args.index("--durations") + 1]} if "--durations" in args else {}
    m = convert(args[1], args[3], **kw)
    order = read_order(ANNOTATIONS / gt)
    captions = {json.loads(line)["query_id"]: json.loads(line)["caption"]
                for line in (ANNOTATIONS / gt).read_text().splitlines()}
    picked = m.select(order)
    if collection == "charades":      # MS-SL's Charades text is normalised (§5.4)
        same = [_words(t) == captions[c] for c, t in zip(picked.cap_ids, picked.texts)]
    else:                             # TVR verbatim, ActivityNet up to whitespace (§5.2, §5.3)
        same = [" ".join(t.split()) == " ".join(captions[c].split())
                for c, t in zip(picked.cap_ids, picked.texts)]
    assert len(same) == {"tvr": 8097, "activitynet": 15753, "charades": 3720}[collection]
    assert all(same)
