"""The statistics of the evidence study (bench/seed_study.py), pure Python and deterministic.

- `wilson_interval`: 95% interval of a proportion (Wilson 1927); well-behaved near 0 and 1.
- `mcnemar_p`: exact two-sided McNemar test on paired right/wrong verdicts (a binomial test on the
  discordant problems).
- `paired_bootstrap`: 95% percentile interval of the mean of per-problem differences, resampling
  problems; a fixed seed, so a report regenerates byte for byte.
- `auroc` / `auroc_interval`: how well a score separates two groups (0.5 = not at all).
- `t_interval`: 95% interval of a mean over a few seeds (Student's t).
"""

from __future__ import annotations

import math
import random
from statistics import mean, stdev

from jobs.score import auroc  # one rank formula, for the study and for hintflow score

Z95 = 1.959964
# Two-sided 97.5% quantiles of Student's t for 1..10 degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 12345


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided p of McNemar's test: `only_a` problems right only under A, `only_b` only under B."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap(differences: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(mean, low, high): the mean per-problem difference and its 95% percentile bootstrap interval."""
    if not differences:
        raise ValueError("paired_bootstrap needs at least one difference")
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(differences[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return mean(differences), means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def auroc_interval(positives: list[float], negatives: list[float], resamples: int = 500,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(auroc, low, high), each group resampled on its own."""
    rng = random.Random(seed)
    values = sorted(
        auroc([rng.choice(positives) for _ in positives], [rng.choice(negatives) for _ in negatives])
        for _ in range(resamples)
    )
    return auroc(positives, negatives), values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) over a few independent runs; one run has no spread to judge by: (mean, -inf, inf)."""
    if not values:
        raise ValueError("t_interval needs at least one value")
    centre = mean(values)
    if len(values) < 2:
        return centre, -math.inf, math.inf
    half = T975.get(len(values) - 1, Z95) * stdev(values) / math.sqrt(len(values))
    return centre, centre - half, centre + half
