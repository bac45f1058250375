"""§1.3 preprocessing against loop oracles that restate the reference functions."""
import numpy as np
import pytest
from data_fixtures import ref_average_to_fixed_length, ref_l2, ref_uniform_sampling

from benchmark.data.features import (
    average_to_fixed_length,
    bin_segments,
    l2_normalize,
    normalize_query_tokens,
    uniform_feature_sampling,
)


@pytest.mark.parametrize("n", [1, 5, 127, 128, 129, 255, 256, 300, 1000])
def test_uniform_sampling_matches_loop_oracle(n):
    x = np.random.default_rng(n).standard_normal((n, 7)).astype(np.float32)
    out = uniform_feature_sampling(x, 128)
    expected = ref_uniform_sampling(x, 128)
    assert out.shape == (min(n, 128), 7)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_uniform_sampling_short_video_is_untouched():
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    assert np.array_equal(uniform_feature_sampling(x, 128), x)


def test_uniform_sampling_hand_case_drops_last_frame():
    # n=5, K=2: b = round([0, 2.5, 5]) = [0, 2, 5] -> clipped [0, 2, 4];
    # rows = mean(x[0:2]), mean(x[2:4]); frame 4 is never averaged in.
    x = np.array([[0.], [2.], [4.], [6.], [100.]], dtype=np.float32)
    np.testing.assert_array_equal(uniform_feature_sampling(x, 2), [[1.], [5.]])


def test_round_half_to_even_boundaries():
    # n=6, K=4: k*n/K = 0, 1.5, 3, 4.5, 6 -> round-half-even 0, 2, 3, 4, 6 -> clip 5
    # bins [0:2], [2:3], [3:4], [4:5]
    x = np.arange(6, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(uniform_feature_sampling(x, 4), [[0.5], [2.], [3.], [4.]])


@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 100, 129])
def test_average_to_fixed_length_matches_torch_oracle(n):
    x = np.random.default_rng(100 + n).standard_normal((n, 5)).astype(np.float32)
    out = average_to_fixed_length(x, 32)
    assert out.shape == (32, 5)
    np.testing.assert_allclose(out, ref_average_to_fixed_length(x, 32), rtol=0, atol=1e-6)


def test_average_to_fixed_length_repeats_frames_of_short_video():
    x = np.array([[1.], [3.]], dtype=np.float32)
    out = average_to_fixed_length(x, 4)
    # b = round([0, .5, 1, 1.5, 2]) = [0, 0, 1, 2, 2] -> clip [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(out, [[1.], [1.], [3.], [3.]])


def test_l2_normalize_eps():
    x = np.array([[3., 4.], [0., 0.]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[3 / 5.00001, 4 / 5.00001], [0, 0]], rtol=1e-6)
    assert l2_normalize(x).dtype == np.float32


def test_query_tokens_normalise_then_truncate():
    x = np.random.default_rng(3).standard_normal((45, 4)).astype(np.float32)
    out = normalize_query_tokens(x, 30)
    assert out.shape == (30, 4)
    np.testing.assert_allclose(out, ref_l2(x)[:30], rtol=1e-6)
    assert normalize_query_tokens(x[:10], 30).shape == (10, 4)


@pytest.mark.parametrize("keep_short,out_len,oracle", [
    (True, 128, lambda x, k: ref_uniform_sampling(x, k)),
    (False, 32, lambda x, k: ref_average_to_fixed_length(x, k)),
])
def test_bin_segments_many_videos_at_once(keep_short, out_len, oracle):
    rng = np.random.default_rng(7)
    lengths = np.array([5, 128, 300, 1, 129, 7, 32, 100, 300])
    xs = [rng.standard_normal((n, 3)).astype(np.float32) for n in lengths]
    binned, new_lengths = bin_segments(np.concatenate(xs), lengths, out_len,
                                       keep_short=keep_short, float32_bounds=not keep_short)
    expected = [oracle(x, out_len) for x in xs]
    assert new_lengths.tolist() == [len(e) for e in expected]
    np.testing.assert_allclose(binned, np.concatenate(expected), rtol=0, atol=1e-6)


def test_bin_segments_per_video_targets():
    rng = np.random.default_rng(8)
    lengths = np.array([50, 9, 300, 40])
    targets = np.array([17, 20, 128, 40])
    xs = [rng.standard_normal((n, 2)).astype(np.float32) for n in lengths]
    binned, new_lengths = bin_segments(np.concatenate(xs), lengths, targets, keep_short=True)
    expected = [ref_uniform_sampling(x, k) for x, k in zip(xs, targets)]
    assert new_lengths.tolist() == [17, 9, 128, 40]
    np.testing.assert_allclose(binned, np.concatenate(expected), rtol=0, atol=1e-6)


def test_bin_segments_rejects_empty_video():
    with pytest.raises(ValueError, match="at least one row"):
        bin_segments(np.zeros((3, 2), np.float32), np.array([3, 0]), 4, keep_short=True)

