"""The scores are written by hand (no scipy at run time); each one is held here to the field's
library on random data: scipy.stats, statsmodels and scikit-learn."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, matthews_corrcoef
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower

from sep.evaluate import (Decision, binomial_p, bootstrap_ci, accuracy, calibration, mcc, mcnemar_p,
                          min_detectable_accuracy, min_detectable_gap, score)

RNG = random.Random(20)


def test_binomial_p_is_scipys_binomtest():
    for _ in range(200):
        n = RNG.randint(1, 300)
        k, p = RNG.randint(0, n), RNG.choice([0.5, RNG.uniform(0.05, 0.95)])
        assert binomial_p(k, n, p) == pytest.approx(stats.binomtest(k, n, p).pvalue, rel=1e-6, abs=1e-12)


def test_mcnemar_p_is_statsmodels_exact_mcnemar():
    for _ in range(100):
        n = RNG.randint(5, 200)
        a = [RNG.random() < 0.6 for _ in range(n)]
        b = [RNG.random() < RNG.uniform(0.3, 0.8) for _ in range(n)]
        table = [[sum(x and y for x, y in zip(a, b)), sum(x and not y for x, y in zip(a, b))],
                 [sum(y and not x for x, y in zip(a, b)), sum(not x and not y for x, y in zip(a, b))]]
        assert mcnemar_p(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-6)


def test_mcc_is_scikit_learns_over_answered_days():
    for _ in range(200):
        n = RNG.randint(2, 120)
        actual = [RNG.choice(["up", "down"]) for _ in range(n)]
        pred = [RNG.choice(["up", "down", "up", None]) for _ in range(n)]
        said = [(a, p) for a, p in zip(actual, pred) if p is not None]
        ours = mcc(list(zip(actual, pred)))
        if not said:
            assert ours is None
            continue
        assert ours == pytest.approx(matthews_corrcoef([a for a, _ in said], [p for _, p in said]), abs=1e-12)
    assert mcc([("up", None), ("down", None)]) is None  # nothing answered: no MCC, not −1


def test_brier_and_reliability_are_scikit_learns():
    for _ in range(30):
        n = RNG.randint(20, 300)
        ds = [Decision("X", f"d{i}", "", RNG.choice(["up", "down"]), RNG.choice(["up", "down"]), RNG.uniform(0.5, 1),
                       0.0) for i in range(n)]
        y = np.array([d.actual == "up" for d in ds], dtype=float)
        p = np.array([d.confidence if d.label == "up" else 1 - d.confidence for d in ds])
        cal = calibration(ds)
        assert cal["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
        freq, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
        bins = [b for b in cal["reliability"] if b["n"]]
        assert [b["freq_up"] for b in bins] == pytest.approx(list(freq))
        assert [b["mean_p_up"] for b in bins] == pytest.approx(list(mean_p))
        ece = sum(b["n"] / n * abs(b["mean_p_up"] - b["freq_up"]) for b in bins)
        assert cal["ece"] == pytest.approx(ece)


def test_bootstrap_interval_is_scipys_percentile_bootstrap():
    """One stock a day, so resampling dates is resampling days: the intervals agree up to Monte Carlo error."""
    for p in (0.5, 0.62, 0.8):
        hits = [(f"2022-{1 + i // 28:02d}-{1 + i % 28:02d}", "up", "up" if RNG.random() < p else "down")
                for i in range(150)]
        ours = bootstrap_ci(hits, accuracy, seed=3)
        right = np.array([a == q for _, a, q in hits], dtype=float)
        ref = stats.bootstrap((right,), np.mean, method="percentile", n_resamples=20_000, random_state=3).confidence_interval
        assert ours[0] == pytest.approx(ref.low, abs=0.02) and ours[1] == pytest.approx(ref.high, abs=0.02)


def test_min_detectable_accuracy_is_statsmodels_power_solution():
    for n in (8, 20, 74, 250, 1000):
        h = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=0)
        expected = math.sin(math.asin(math.sqrt(0.5)) + h / 2) ** 2
        assert min_detectable_accuracy(n) == pytest.approx(expected, abs=2e-3)
    assert min_detectable_accuracy(0) is None


def test_min_detectable_gap_is_connors_and_mcnemar_finds_it_with_the_power_asked():
    """Two arms on the same days: the gap is Connor's sample size solved backwards, and on simulated days
    with that gap the exact McNemar test (statsmodels') rejects at 0.05 about 80% of the time."""
    z_a, z_b = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    for n, d in ((67, 0.16), (100, 0.10), (200, 0.2), (1000, 0.05)):
        g = min_detectable_gap(n, d)
        assert (z_a * math.sqrt(d) + z_b * math.sqrt(d - g * g)) ** 2 / g ** 2 == pytest.approx(n, rel=1e-6)
    n, d = 300, 0.2
    g = min_detectable_gap(n, d)
    rng = np.random.default_rng(3)
    cells = rng.multinomial(n, [(d + g) / 2, (d - g) / 2, 1 - d], size=2000)  # only a right, only b right, same
    rejected = [mcnemar([[0, a], [b, 0]], exact=True).pvalue < 0.05 for a, b, _ in cells]
    assert 0.72 < sum(rejected) / len(rejected) < 0.86
    assert min_detectable_gap(67, 0.0) is None  # arms that never disagree can show no gap
    # 43 days with disagreements on 16% of them: even all of them on one side is found with power below 0.8
    assert min_detectable_gap(43, 0.16) is None


def test_a_silent_arm_has_coverage_zero_and_no_test():
    """Every answer unparsable: accuracy 0 (unanswered counts wrong), but no MCC and no p-value,
    not 'significantly worse than a coin'."""
    s = score([(f"2022-05-{d:02d}", "up" if d % 3 else "down", None) for d in range(1, 29)])
    assert s["coverage"] == 0 and s["accuracy"] == 0 and s["answered"] == 0
    assert s["mcc"] is None and s["mcc_ci95"] is None and s["p_vs_coin"] is None
    assert s["accuracy_answered"] is None and s["min_detectable_accuracy"] is None
