"""Honest scores over stored forecasts: accuracy, MCC, intervals, calibration, baselines, backtest.

A *forecast* is an answer made with only what was known at the end of D: a reflect run's trial 0
(which may recall lessons of earlier days whose outcome was known by D) or a best-of-n answer.
A retry after a miss was told D's outcome, so the share of days the retries got right is
`hindsight`: a statistic of the training data, never set against baselines and never traded.
An answer made with a trained run on or before that run's `data_end` is in-sample and is
reported apart, never in the headline.

An unparsable answer counts as wrong in `accuracy`, and so does an answer the quality gate flagged
(copied, ungrounded, invented dates, degenerate): neither is *answered*. `coverage` is the share
of days answered; MCC, the exact tests and `min_detectable_accuracy` are over answered days
only, so an arm that answered nothing has none of them (it is silent, not worse than a coin).
The statistics are written here without scipy; tests/test_stats.py holds each to scipy,
statsmodels or scikit-learn on random data. A
non-trading D that shares its (last close, target close) interval with the trading day before
it is scored once. Baselines are computed on the same days; the majority class comes from the
trading days *before* the evaluated range. Intervals resample whole dates, because the stocks
of one day move together.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist

import sqlite_utils

from sep.errors import BadInput
from sep.memory import PredictionStore, closes_before
from sep.settings import default
from sep.tradingdays import market_of
from sep.train.rewards import market_reward
from sep.window import label_of, outcome, trading_days, up_probability

BOOTSTRAP = 1000
TRAIN_DAYS = 60  # trading days before the range that fix the majority-class baseline
# Round-trip cost of one day's position, in basis points of the position, per market:
# KRX: securities transaction tax on the sell side (0.20% for KOSPI in 2023) + 0.015% commission
# each way; US: commission only (about 1 bp each way).
COST_BPS = {"XKRX": 23.0, "PRICES": 2.0}
HINDSIGHT_NOTE = ("Retries were told the day's outcome before answering: this is how often reflection found the "
                  "right side in hindsight (training data), not a forecast. Never compare it with baselines.")


@dataclass
class Decision:
    stock: str
    date: str
    target_day: str
    actual: str
    label: str | None
    confidence: float | None  # probability of `label`
    ret: float
    explanation: str = ""
    last_day: str = ""        # the last trading day on or before `date`
    method: str = "reflect"
    model: str = ""
    in_sample: bool = False
    flags: list[str] = field(default_factory=list)  # quality flags: the label was withheld (unparsable)


def default_cost_bps(stock: str) -> float:
    return COST_BPS.get(market_of(stock), COST_BPS["PRICES"])


# ---------------------------------------------------------------- reading stored predictions


def _model_matches(stored: str, wanted: str | None) -> bool:
    """`--model fake` matches `fake` and `fake@http://host/v1` (a server's model id)."""
    return wanted is None or stored == wanted or stored.split("@", 1)[0] == wanted


def decisions(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None,
              which: str = "forecast", *, method: str = "reflect", model: str | None = None) -> list[Decision]:
    """Stored predictions, one per (stock, day, model).

    `forecast`: what was answered with only what was known at D (reflect trial 0, or the best-of-n
    answer). `final`: a reflect run's last trial (hindsight when it followed a miss).
    """
    if which not in ("final", "forecast"):
        raise ValueError(which)
    rows = PredictionStore(db).scored(stocks, start, end, method, last_trial=which == "final")
    days = {stock: trading_days(db, stock) for stock in {r[0] for r in rows}}
    out = []
    for stock, date, target, actual, label, conf, expl, mdl, data_end, flags in rows:
        if not _model_matches(mdl, model):
            continue
        last, _, _, _, ret = outcome(db, stock, date, days=days[stock])
        flagged = flags.split(",") if flags else []
        out.append(Decision(stock, date, target, actual, None if flagged else label, None if flagged else conf, ret,
                            expl or "", last, method, mdl, bool(data_end and date <= data_end), flagged))
    return out


def once_per_interval(ds: list[Decision]) -> list[Decision]:
    """Drop a non-trading D whose (last close, target) interval an earlier D of the same model already scored."""
    seen, out = set(), []
    for d in sorted(ds, key=lambda d: (d.date, d.stock, d.model)):
        key = (d.stock, d.model, d.method, d.last_day, d.target_day)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def forecast_groups(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None) -> list[tuple[str, str, int]]:
    """(method, model, days) of every forecasting method and model stored in scope."""
    return PredictionStore(db).forecast_groups(stocks, start, end)


# ---------------------------------------------------------------- metrics

Hit = tuple[str, str, "str | None"]  # (date, actual, predicted)


def accuracy(pairs: Sequence[tuple[str, str | None]]) -> float | None:
    return sum(a == p for a, p in pairs) / len(pairs) if pairs else None


def answered(pairs: Sequence[tuple[str, str | None]]) -> list[tuple[str, str]]:
    return [(a, p) for a, p in pairs if p is not None]


def mcc(pairs: Sequence[tuple[str, str | None]]) -> float | None:
    """Matthews correlation with up as positive, over answered days; None when none was answered
    (0.0 when one side is empty, as scikit-learn's matthews_corrcoef)."""
    pairs = answered(pairs)
    if not pairs:
        return None
    tp = sum(a == p == "up" for a, p in pairs)
    tn = sum(a == p == "down" for a, p in pairs)
    fp = sum(a == "down" and p == "up" for a, p in pairs)
    fn = sum(a == "up" and p == "down" for a, p in pairs)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def min_detectable_accuracy(n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest accuracy a two-sided test against a coin detects with this power at n days
    (normal approximation on Cohen's h, as statsmodels' NormalIndPower with ratio 0)."""
    if n < 1:
        return None
    z = NormalDist()
    h = (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) / math.sqrt(n)
    return math.sin(math.asin(math.sqrt(0.5)) + h / 2) ** 2 if h / 2 < math.pi / 4 else 1.0


def bootstrap_ci(hits: Sequence[Hit], stat: Callable, seed: int = default("seed")) -> list[float] | None:
    """95% percentile interval of `stat`, resampling whole dates (the stocks of a day move together);
    None with fewer than two dates or when `stat` has no value on a resample."""
    by_date: dict[str, list[tuple[str, str | None]]] = {}
    for date, actual, pred in hits:
        by_date.setdefault(date, []).append((actual, pred))
    if len(hits) < 2 or len(by_date) < 2:
        return None
    dates = sorted(by_date)
    rng = random.Random(seed)
    values = []
    for _ in range(BOOTSTRAP):
        sample = [pair for _ in dates for pair in by_date[rng.choice(dates)]]
        values.append(stat(sample))
    if any(v is None for v in values):
        values = [v for v in values if v is not None]
        if len(values) < BOOTSTRAP * 0.9:
            return None
    values.sort()
    k = len(values)
    return [values[int(0.025 * k)], values[int(0.975 * k) - 1]]


def binomial_p(hits: int, n: int, p: float = 0.5) -> float | None:
    """Exact two-sided p-value of `hits` successes in `n` trials against a success rate `p`."""
    if n == 0:
        return None
    if p <= 0 or p >= 1:
        return 1.0 if hits == round(p * n) else 0.0

    def logpmf(k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)

    observed = logpmf(hits)
    return min(1.0, sum(math.exp(lp) for k in range(n + 1) if (lp := logpmf(k)) <= observed + 1e-9))


def mcnemar_p(a_right: Sequence[bool], b_right: Sequence[bool]) -> float | None:
    """Exact McNemar test of two predictors on the same days: do their disagreements favour one side?"""
    only_a = sum(x and not y for x, y in zip(a_right, b_right))
    only_b = sum(y and not x for x, y in zip(a_right, b_right))
    return binomial_p(only_a, only_a + only_b) if only_a + only_b else 1.0


def min_detectable_gap(n: int, discordant: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest accuracy difference between two arms on the same n days that McNemar's test detects
    with this power, when they disagree on a `discordant` share of the days: Connor's (1987) sample size,
    n = (z_a sqrt(d) + z_b sqrt(d - g^2))^2 / g^2, solved for the gap g. None when they never disagree
    (no gap can show) or when even the largest gap the disagreements allow needs more days."""
    if n < 1 or not 0 < discordant <= 1:
        return None
    z = NormalDist()
    z_a, z_b = z.inv_cdf(1 - alpha / 2), z.inv_cdf(power)

    def needed(gap: float) -> float:  # days Connor's formula asks for this gap; falls as the gap grows
        return (z_a * math.sqrt(discordant) + z_b * math.sqrt(max(0.0, discordant - gap * gap))) ** 2 / gap ** 2

    low, high = 1e-9, discordant  # a gap is at most the share of days the arms disagree on
    if needed(high) > n:
        return None
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) > n else (low, mid)
    return high


def confusion(pairs: Sequence[tuple[str, str | None]]) -> dict:
    table = {a: {"up": 0, "down": 0, "none": 0} for a in ("up", "down")}
    for actual, pred in pairs:
        table[actual][pred or "none"] += 1
    return table


def majority_rate(pairs: Sequence[tuple[str, str | None]]) -> float | None:
    """The accuracy of always answering the more frequent actual label on these very days (a hard bar)."""
    if not pairs:
        return None
    ups = sum(a == "up" for a, _ in pairs)
    return max(ups, len(pairs) - ups) / len(pairs)


def score(hits: Sequence[Hit], seed: int = default("seed")) -> dict:
    """Accuracy (unanswered = wrong) and coverage over every day; accuracy, MCC and exact tests
    against a coin and the majority rate over answered days, with date-resampled 95% intervals."""
    pairs = [(a, p) for _, a, p in hits]
    said = answered(pairs)
    right = sum(a == p for a, p in said)
    rate = majority_rate(said)
    answered_hits = [h for h in hits if h[2] is not None]
    return {"n": len(pairs), "answered": len(said), "coverage": len(said) / len(pairs) if pairs else None,
            "accuracy": accuracy(pairs), "accuracy_ci95": bootstrap_ci(hits, accuracy, seed),
            "accuracy_answered": accuracy(said), "accuracy_answered_ci95": bootstrap_ci(answered_hits, accuracy, seed),
            "mcc": mcc(said), "mcc_ci95": bootstrap_ci(answered_hits, mcc, seed),
            "p_vs_coin": binomial_p(right, len(said)), "majority_rate": rate,
            "p_vs_majority": binomial_p(right, len(said), rate) if rate is not None else None,
            "min_detectable_accuracy": min_detectable_accuracy(len(said)),
            "unparsable": len(pairs) - len(said)}


def paired_gap(a: Sequence[Decision], b: Sequence[Decision], seed: int = default("seed")) -> dict:
    """Accuracy of `a` minus `b` on the days both answered for, with a date-resampled 95% interval
    and McNemar's exact p: how two arms differ on the same days (e.g. masked minus base); with the share of
    days they disagree on, and the smallest gap this many days could detect (`min_detectable_gap`)."""
    other = {(d.stock, d.date): d for d in b}
    common = [(d, other[(d.stock, d.date)]) for d in a if (d.stock, d.date) in other]
    if not common:
        return {"n": 0, "gap": None, "gap_ci95": None, "mcnemar_p": None, "discordant": None, "min_detectable_gap": None}
    # one row per day, (date, a right, b right): bootstrap_ci resamples whole dates of these pairs
    rows = [(x.date, x.label == x.actual, y.label == y.actual) for x, y in common]

    def gap(sample: Sequence[tuple[bool, bool]]) -> float:
        return sum(p - q for p, q in sample) / len(sample)

    discordant = sum(p != q for _, p, q in rows) / len(rows)
    return {"n": len(rows), "gap": gap([(p, q) for _, p, q in rows]), "gap_ci95": bootstrap_ci(rows, gap, seed),
            "mcnemar_p": mcnemar_p([p for _, p, _ in rows], [q for _, _, q in rows]), "discordant": discordant,
            "min_detectable_gap": min_detectable_gap(len(rows), discordant)}


def market_score(rows: Sequence[tuple[str, str | None, float]], seed: int = default("seed")) -> dict:
    """The mean market reward per forecast (RLMF's, `sep.train.rewards.market_reward`: +|r| when the
    label's direction was right, -|r| when wrong or unanswered) over (date, label, return) rows, with a
    date-resampled 95% interval: what PPO and GRPO maximise, measured where they did not train."""
    rewards = [(date, market_reward(label, ret), None) for date, label, ret in rows]

    def mean(sample: Sequence[tuple[float, None]]) -> float:
        return sum(r for r, _ in sample) / len(sample)

    return {"market_reward": mean([(r, None) for _, r, _ in rewards]) if rewards else None,
            "market_reward_ci95": bootstrap_ci(rewards, mean, seed)}


def p_up(d: Decision) -> float:
    """The forecast's probability that the close goes up (0.5 when it gave none)."""
    return up_probability(d.label, d.confidence, 0.5)


def calibration(ds: Sequence[Decision], bins: int = 10) -> dict:
    """Brier score and expected calibration error of P(up) over [0, 1], with the reliability diagram's bins."""
    if not ds:
        return {"brier": None, "ece": None, "reliability": []}
    probs = [(p_up(d), 1.0 if d.actual == "up" else 0.0) for d in ds]
    brier = sum((p - y) ** 2 for p, y in probs) / len(probs)
    table, ece = [], 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = [(p, y) for p, y in probs if lo <= p < hi or (i == bins - 1 and p == 1.0)]
        if inside:
            mean_p = sum(p for p, _ in inside) / len(inside)
            freq = sum(y for _, y in inside) / len(inside)
            ece += len(inside) / len(probs) * abs(mean_p - freq)
        table.append({"lo": lo, "hi": hi, "n": len(inside), "mean_p_up": mean_p if inside else None,
                      "freq_up": freq if inside else None})
    return {"brier": brier, "ece": ece, "reliability": table}


def platt(points: Sequence[tuple[float, float]], l2: float = 1.0) -> tuple[float, float] | None:
    """Platt scaling: (a, b) of P(up) = 1 / (1 + exp(-(a·logit(p) + b))) fitted by Newton's method on
    (p, outcome) pairs of past days, with a ridge pull toward the identity (a = 1, b = 0), so a handful
    of days moves it little. None with fewer than 10 pairs or only one outcome."""
    pairs = [(min(max(p, 1e-4), 1 - 1e-4), y) for p, y in points if p is not None]
    if len(pairs) < 10 or len({y for _, y in pairs}) < 2:
        return None
    xs = [math.log(p / (1 - p)) for p, _ in pairs]
    ys = [y for _, y in pairs]
    a, b = 1.0, 0.0
    for _ in range(50):
        g_a = l2 * (a - 1.0)
        g_b = l2 * b
        h_aa, h_ab, h_bb = l2, 0.0, l2
        for x, y in zip(xs, ys):
            q = 1 / (1 + math.exp(-(a * x + b)))
            g_a += (q - y) * x
            g_b += q - y
            w = q * (1 - q)
            h_aa += w * x * x
            h_ab += w * x
            h_bb += w
        det = h_aa * h_bb - h_ab * h_ab
        if det <= 1e-12:
            break
        step_a = (h_bb * g_a - h_ab * g_b) / det
        step_b = (h_aa * g_b - h_ab * g_a) / det
        a, b = a - step_a, b - step_b
        if abs(step_a) + abs(step_b) < 1e-9:
            break
    return a, b


def platt_apply(p: float, ab: tuple[float, float]) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return 1 / (1 + math.exp(-(ab[0] * math.log(p / (1 - p)) + ab[1])))


def calibrated(ds: Sequence[Decision], ab: tuple[float, float] | None) -> list[Decision]:
    """The decisions with P(up) passed through a Platt calibrator (the label stays: it is what was
    answered; its confidence becomes the calibrated probability of that label)."""
    if ab is None:
        return list(ds)
    out = []
    for d in ds:
        if d.label is None or d.confidence is None:
            out.append(d)
            continue
        q = platt_apply(p_up(d), ab)
        out.append(replace(d, confidence=q if d.label == "up" else 1 - q))
    return out


def hits_of(ds: Sequence[Decision]) -> list[Hit]:
    return [(d.date, d.actual, d.label) for d in ds]


SELECTIVE_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def coverage_accuracy(ds: Sequence[Decision]) -> list[dict]:
    """Abstain below a confidence: for each threshold, the share of days still answered and their accuracy."""
    out = []
    for t in SELECTIVE_THRESHOLDS:
        kept = [d for d in ds if d.label is not None and d.confidence is not None and d.confidence >= t]
        out.append({"threshold": t, "coverage": len(kept) / len(ds) if ds else None,
                    "n": len(kept), "accuracy": accuracy([(d.actual, d.label) for d in kept])})
    return out


# ---------------------------------------------------------------- baselines and backtest


def _close_before(db: sqlite_utils.Database, stock: str, day: str) -> tuple[float, float] | None:
    closes = closes_before(db, stock, day, 2)
    return (closes[0], closes[1]) if len(closes) == 2 else None


def baselines(db: sqlite_utils.Database, ds: list[Decision], seed: int = default("seed"),
              stances: dict[tuple[str, str], float | None] | None = None) -> dict:
    """Majority class of the TRAIN_DAYS trading days before the range, previous-day momentum, a seeded
    coin, and with `stances` (each day's window stance) the stance-only baseline; each with its Brier."""
    majority_of = {}
    for stock in {d.stock for d in ds}:
        first = min(d.date for d in ds if d.stock == stock)
        closes = closes_before(db, stock, first, TRAIN_DAYS + 1, inclusive=False)
        labels = [label_of(b / a - 1) for a, b in zip(closes, closes[1:])]
        majority_of[stock] = "up" if labels.count("up") > labels.count("down") else "down"
    rng = random.Random(seed)
    momentum = []
    for d in ds:
        closes = _close_before(db, d.stock, d.date)
        momentum.append((d.date, d.actual, label_of(closes[1] / closes[0] - 1) if closes else None))
    majority = [(d.date, d.actual, majority_of[d.stock]) for d in ds]
    coin = [(d.date, d.actual, rng.choice(["up", "down"])) for d in ds]
    out = {"majority": baseline_score(ds, majority, hard_brier(majority), seed),
           "momentum": baseline_score(ds, momentum, hard_brier(momentum), seed),
           "random": baseline_score(ds, coin, 0.25, seed)}  # a coin's P(up) is 1/2 every day
    if stances:
        out["stance_only"] = stance_baseline(ds, stances, seed)
    return out


def baseline_score(ds: Sequence[Decision], hits: Sequence[Hit], brier: float | None, seed: int) -> dict:
    """A baseline's answers on the days of `ds` (one hit per decision, in order), scored as an arm is."""
    return {**score(hits, seed), "brier": brier,
            **market_score([(d.date, label, d.ret) for d, (_, _, label) in zip(ds, hits, strict=True)], seed)}


def hard_brier(hits: Sequence[Hit]) -> float | None:
    """The Brier score of answers given with certainty (P(up) 1 or 0; none given: 1/2)."""
    if not hits:
        return None
    return sum(0.25 if p is None else float(p != a) for _, a, p in hits) / len(hits)


def stance_baseline(ds: Sequence[Decision], stances: dict[tuple[str, str], float | None],
                    seed: int = default("seed")) -> dict:
    """The stance-only baseline: each day's net stance of the window's items, with no explanation
    (`window_stance`, the mean P(positive) - P(negative)): up above 0, down below, no answer at 0;
    P(up) = 1/2 + 1/2 · window_stance."""
    hits, probs = [], []
    for d in ds:
        s = stances.get((d.stock, d.date))
        label = None if s is None or s == 0 else "up" if s > 0 else "down"
        hits.append((d.date, d.actual, label))
        p = 0.5 if s is None else 0.5 + 0.5 * s
        probs.append((p - (1.0 if d.actual == "up" else 0.0)) ** 2)
    return {**baseline_score(ds, hits, sum(probs) / len(probs) if probs else None, seed),
            "what": "net stance of the window's items (mean P(positive) - P(negative)), no explanation"}


def _curve_stats(returns: list[float]) -> dict:
    equity, peak, worst, curve, drawdown = 1.0, 1.0, 0.0, [], []
    for r in returns:
        equity *= 1 + r
        peak = max(peak, equity)
        worst = min(worst, equity / peak - 1)
        curve.append(equity - 1)
        drawdown.append(equity / peak - 1)
    n = len(returns)
    mean = sum(returns) / n if n else 0.0
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1)) if n > 1 else 0.0
    return {"cumulative_return": equity - 1, "sharpe": mean / sd * math.sqrt(252) if sd else None,
            "max_drawdown": worst, "curve": curve, "drawdown": drawdown}


def backtest(ds: list[Decision], threshold: float | None = None, *, cost_bps: float | None = None,
             long_only: bool = False) -> dict:
    """Long on 상승, short on 하락 (flat with `long_only`) from D's close to the target close, equal weight per day.

    Below `threshold` confidence (or unparsable) the day is flat. Each position pays `cost_bps` per
    round trip (default: the market's, see COST_BPS); `gross` is before costs, `net` after.
    Compared with buy-and-hold (before costs).
    """
    by_day: dict[str, list[tuple[float, float, float]]] = {}
    for d in ds:
        pos = {"up": 1.0, "down": 0.0 if long_only else -1.0}.get(d.label or "", 0.0)
        if threshold is not None and (d.confidence is None or d.confidence < threshold):
            pos = 0.0
        cost = (default_cost_bps(d.stock) if cost_bps is None else cost_bps) / 10_000
        by_day.setdefault(d.date, []).append((pos, d.ret, cost))
    days = sorted(by_day)
    gross = [sum(p * r for p, r, _ in by_day[x]) / len(by_day[x]) for x in days]
    net = [sum(p * r - abs(p) * c for p, r, c in by_day[x]) / len(by_day[x]) for x in days]
    hold = [sum(r for _, r, _ in by_day[x]) / len(by_day[x]) for x in days]
    taken = [(p, r) for x in days for p, r, _ in by_day[x] if p]
    costs = sorted({c * 10_000 for x in days for _, _, c in by_day[x]})
    return {"days": days, "threshold": threshold, "long_only": long_only, "cost_bps": costs[0] if len(costs) == 1 else costs,
            "positions": len(taken), "hit_rate": sum(p * r > 0 for p, r in taken) / len(taken) if taken else None,
            "gross": _curve_stats(gross), "net": _curve_stats(net), "buy_and_hold": _curve_stats(hold)}


def equity_curves(bt: dict) -> dict:
    """A backtest's daily series, what an equity plot draws: net and gross equity, the net
    drawdown, buy-and-hold."""
    return {"days": bt["days"], "gross": bt["gross"]["curve"], "net": bt["net"]["curve"],
            "drawdown": bt["net"]["drawdown"], "buy_and_hold": bt["buy_and_hold"]["curve"], "cost_bps": bt["cost_bps"]}


def backtest_summary(bt: dict) -> dict:
    """The four backtest figures an arm table shows."""
    return {"gross": bt["gross"]["cumulative_return"], "net": bt["net"]["cumulative_return"],
            "sharpe": bt["net"]["sharpe"], "max_drawdown": bt["net"]["max_drawdown"]}


def forecast_report(ds: list[Decision], seed: int = default("seed")) -> dict:
    """Everything a set of forecasts is scored by: score, calibration (Brier, ECE, reliability) and
    the coverage-accuracy curve."""
    return {**score(hits_of(ds), seed), **calibration(ds), "coverage_accuracy": coverage_accuracy(ds),
            **market_score([(d.date, d.label, d.ret) for d in ds], seed)}


# ---------------------------------------------------------------- the report


def _pick_group(groups: list[tuple[str, str, int]], method: str | None, model: str | None) -> tuple[str, str | None]:
    candidates = [(m, mdl) for m, mdl, _ in groups if (method is None or m == method) and _model_matches(mdl, model)]
    if not candidates:
        raise BadInput("No stored forecasts match" + (f" --method {method}" if method else "")
                       + (f" --answered-by {model}" if model else "") + " in that range; run `sep reflect`, `sep predict` "
                       "or a batch job first.")
    methods = sorted({m for m, _ in candidates}, key=lambda m: m != "reflect")
    chosen = method or methods[0]
    models = sorted({mdl for m, mdl in candidates if m == chosen})
    if len(models) > 1 and model is None:
        raise BadInput(f"Forecasts from {len(models)} models are stored for that range ({', '.join(models)}); "
                       "pick one with --answered-by.")
    return chosen, model if model is not None else models[0]


def evaluate(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None, *, seed: int = default("seed"),
             threshold: float | None = None, method: str | None = None, model: str | None = None,
             cost_bps: float | None = None, long_only: bool = False) -> dict:
    """Score the forecasts of one method and model; hindsight and in-sample days are reported apart."""
    groups = forecast_groups(db, stocks, start, end)
    if not groups:
        raise BadInput(f"No stored predictions for {', '.join(stocks)} in that range; run `sep reflect` or a batch job first.")
    method, model = _pick_group(groups, method, model)
    every = once_per_interval(decisions(db, stocks, start, end, "forecast", method=method, model=model))
    scored = [d for d in every if not d.in_sample]
    in_sample = [d for d in every if d.in_sample]
    if not scored:
        raise BadInput(f"All {len(in_sample)} forecasts in that range are in-sample (made by a run trained on those "
                       "days); evaluate days after the run's data_end.")
    hits = hits_of(scored)
    report = {"stocks": stocks, "start": scored[0].date, "end": scored[-1].date,
              "forecast": {"method": method, "model": scored[0].model,
                           "what": "trial 0: answered with only what was known at the end of D" if method == "reflect"
                           else "best-of-n: answered with only what was known at the end of D"},
              **forecast_report(scored, seed), "confusion": confusion([(a, p) for _, a, p in hits]),
              "flagged": {f: sum(f in d.flags for d in scored) for f in sorted({f for d in scored for f in d.flags})},
              "baselines": baselines(db, scored, seed),
              "backtest": backtest(scored, threshold, cost_bps=cost_bps, long_only=long_only),
              "scored_once": len(decisions(db, stocks, start, end, "forecast", method=method, model=model)) - len(every),
              "in_sample": {"n": len(in_sample), **(score(hits_of(in_sample), seed) if in_sample else {}),
                            "note": "answers of a run trained on these days: never in the headline"},
              "forecasts": {}}
    days = {(d.stock, d.date) for d in scored}
    for m, mdl, _ in groups:  # every forecasting method and model on the headline's days, out of sample
        ds = [d for d in once_per_interval(decisions(db, stocks, start, end, "forecast", method=m, model=mdl))
              if (d.stock, d.date) in days and not d.in_sample and d.model == mdl]
        if ds:
            report["forecasts"][f"{m} · {mdl}"] = forecast_report(ds, seed)
    if method == "reflect":
        final = [d for d in decisions(db, stocks, start, end, "final", method=method, model=model)
                 if (d.stock, d.date) in days]
        report["hindsight"] = {"n": len(final), "accuracy": accuracy([(d.actual, d.label) for d in final]),
                               "note": HINDSIGHT_NOTE}
    return report
