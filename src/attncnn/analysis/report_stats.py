"""The report's statistics: seed-paired differences against a baseline row, with a 95%
Student-t interval and a verdict in plain words, and wall time per run.

Pure functions on numbers (no torch, no scipy): `attncnn.analysis.report` calls them per table.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Student t quantiles t(0.975, df) for df = 1..30 (scipy.stats.t.ppf, 4 decimals); larger df
# use the Cornish-Fisher expansion in `t975`, which agrees with scipy to 1e-7 from df 31 on.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054

WINS, LOSES, NOISE, NO_INTERVAL, NO_PAIRS = (
    "wins", "loses", "within noise", "n<2: no interval", "no seed in common")


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%)."""
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, not {df!r}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    terms = ((z ** 3 + z) / 4,
             (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(g / df ** (k + 1) for k, g in enumerate(terms))


@dataclass(frozen=True)
class PairedDiff:
    """A row minus the baseline, seed by seed, over the seeds both have."""

    seeds: tuple           # the seeds paired, sorted
    diffs: tuple           # row - baseline for each of them (percentage points)
    mean: float | None     # mean of the per-seed differences
    half_width: float | None  # t(0.975, n-1) * sd / sqrt(n); None for n < 2

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def verdict(self) -> str:
        """"wins" (interval above 0), "loses" (below 0), "within noise" (contains 0)."""
        if self.n == 0:
            return NO_PAIRS
        if self.half_width is None:
            return NO_INTERVAL
        if self.low > 0:
            return WINS
        if self.high < 0:
            return LOSES
        return NOISE


def paired_difference(row: dict, baseline: dict) -> PairedDiff:
    """`row` and `baseline` map seed -> top-1; the difference is taken per seed they share
    (a seed only one of them has is left out), then averaged, with a 95% t-interval."""
    seeds = tuple(sorted(set(row) & set(baseline), key=lambda s: (s is None, str(s))))
    diffs = tuple(float(row[s]) - float(baseline[s]) for s in seeds)
    if not diffs:
        return PairedDiff((), (), None, None)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDiff(seeds, diffs, mean, None)
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDiff(seeds, diffs, mean, half)


def mean_minutes(wall_times_s) -> float | None:
    """Mean wall time in minutes over the runs that recorded one (None if none did)."""
    known = [float(w) for w in wall_times_s if isinstance(w, (int, float)) and not isinstance(w, bool)]
    return statistics.fmean(known) / 60.0 if known else None


def time_ratio(minutes: float | None, baseline_minutes: float | None) -> float | None:
    """A row's mean wall time over the baseline's (1.25: a quarter slower per run)."""
    if minutes is None or not baseline_minutes:
        return None
    return minutes / baseline_minutes


def signed(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"
