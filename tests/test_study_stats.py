"""The evidence study's statistics (bench/study_stats.py) against values computed another way."""

from __future__ import annotations

import math
import random

import pytest

from bench.study_stats import auroc, auroc_interval, mcnemar_p, paired_bootstrap, t_interval, wilson_interval


def test_wilson_interval_matches_the_textbook_example():
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_mcnemar_is_a_two_sided_binomial_test_on_the_discordant_pairs():
    # 1 vs 9 discordant: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11/1024.
    assert mcnemar_p(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)
    assert mcnemar_p(5, 5) == 1.0 and mcnemar_p(0, 0) == 1.0


def test_paired_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = random.Random(0)
    small = [rng.choice([-1, 0, 0, 1, 1]) for _ in range(50)]
    large = small * 16
    centre, low, high = paired_bootstrap(small)
    assert low < centre < high
    _, low_large, high_large = paired_bootstrap(large)
    assert high_large - low_large < (high - low) / 2  # 16x the problems: about a quarter of the width
    assert paired_bootstrap(small) == paired_bootstrap(small)  # seeded: a report regenerates byte for byte
    assert paired_bootstrap([0.0] * 30) == (0.0, 0.0, 0.0)


def test_auroc_counts_pairs_and_ties():
    assert auroc([2, 3], [0, 1]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1], [1]) == 0.5
    positives, negatives = [0.1, 0.4, 0.35, 0.8], [0.2, 0.3, 0.1, 0.5]
    brute = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives) / 16
    assert auroc(positives, negatives) == pytest.approx(brute)
    score, low, high = auroc_interval(positives * 10, negatives * 10)
    assert low <= score <= high


def test_t_interval_uses_student_t():
    centre, low, high = t_interval([1.0, 2.0, 3.0])
    assert centre == 2.0 and high - centre == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert t_interval([5.0]) == (5.0, -math.inf, math.inf)  # one seed decides nothing
