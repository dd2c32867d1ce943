"""The engine-vs-replica mismatch summary: mean, p99 and max of the per-token log-prob gaps."""

import pytest

from actors.decoding.cll_scorer import logprob_gap_metrics


def test_one_bad_token_shows_in_the_max_but_not_in_the_mean_or_p99():
    gaps = [1e-6] * 999 + [1.2]  # a bf16-like outlier among float32-like agreement
    metrics = logprob_gap_metrics(gaps)
    assert metrics["engine_scorer_logprob_max_diff"] == pytest.approx(1.2)
    assert metrics["engine_scorer_logprob_mean_diff"] == pytest.approx((999e-6 + 1.2) / 1000)
    # p99 of 1000 values (linear interpolation at 0.99 * 999 = 989.01): still among the 1e-6 ones
    assert metrics["engine_scorer_logprob_p99_diff"] == pytest.approx(1e-6)
    many = logprob_gap_metrics([0.0] * 950 + [0.5] * 50)  # 5% of tokens off: p99 sees it
    assert many["engine_scorer_logprob_p99_diff"] == pytest.approx(0.5)


def test_nothing_checked_is_all_zero():
    assert set(logprob_gap_metrics([]).values()) == {0.0}
