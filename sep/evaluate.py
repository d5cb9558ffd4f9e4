"""Honest scores over stored predictions: accuracy, MCC, intervals, baselines, ablations, backtest.

An unparsable answer counts as wrong everywhere (in MCC it is scored as the opposite of what
happened). Baselines are computed on the same days; the majority class comes from the trading
days *before* the evaluated range, never from the range itself.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import sqlite_utils

from sep.errors import BadInput
from sep.window import label_of, outcome, trading_days

BOOTSTRAP = 1000
TRAIN_DAYS = 60  # trading days before the range that fix the majority-class baseline


@dataclass
class Decision:
    stock: str
    date: str
    target_day: str
    actual: str
    label: str | None
    confidence: float | None
    ret: float
    explanation: str = ""


def decisions(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None,
              which: str = "final") -> list[Decision]:
    """Stored predictions, one per (stock, day): `final` (last reflect trial), `trial0`, `best-of-n`."""
    if which == "best-of-n":
        cond = "p.method = 'best-of-n'"
    elif which == "trial0":
        cond = "p.method = 'reflect' AND p.trial = 0"
    else:
        cond = ("p.method = 'reflect' AND p.trial = (SELECT MAX(trial) FROM predictions q WHERE q.stock = p.stock "
                "AND q.date = p.date AND q.method = 'reflect')")
    where, args = [cond, f"p.stock IN ({','.join('?' * len(stocks))})"], list(stocks)
    if start:
        where.append("p.date >= ?"), args.append(start)
    if end:
        where.append("p.date <= ?"), args.append(end)
    rows = db.execute(f"SELECT p.stock, p.date, p.target_day, p.actual, p.label, p.confidence, p.explanation "
                      f"FROM predictions p WHERE {' AND '.join(where)} ORDER BY p.date, p.stock", args).fetchall()
    days = {stock: trading_days(db, stock) for stock in {r[0] for r in rows}}
    return [Decision(stock, date, target, actual, label, conf, outcome(db, stock, date, days=days[stock])[4], expl or "")
            for stock, date, target, actual, label, conf, expl in rows]


# ---------------------------------------------------------------- metrics


def accuracy(pairs: list[tuple[str, str | None]]) -> float | None:
    return sum(a == p for a, p in pairs) / len(pairs) if pairs else None


def mcc(pairs: list[tuple[str, str | None]]) -> float | None:
    """Matthews correlation with up as positive; an unparsable answer is scored as the wrong side."""
    if not pairs:
        return None
    tp = fp = tn = fn = 0
    for actual, pred in pairs:
        pred = pred or ("down" if actual == "up" else "up")
        if pred == "up":
            tp, fp = tp + (actual == "up"), fp + (actual != "up")
        else:
            tn, fn = tn + (actual == "down"), fn + (actual != "down")
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def bootstrap_ci(pairs: list[tuple[str, str | None]], stat, seed: int = 0) -> list[float] | None:
    """95% percentile interval of `stat` over resampled days."""
    if len(pairs) < 2:
        return None
    rng = random.Random(seed)
    values = sorted(stat([rng.choice(pairs) for _ in pairs]) for _ in range(BOOTSTRAP))
    return [values[int(0.025 * BOOTSTRAP)], values[int(0.975 * BOOTSTRAP) - 1]]


def binomial_p(hits: int, n: int) -> float | None:
    """Exact two-sided p-value of `hits` successes in `n` days against a coin (p = 0.5)."""
    if n == 0:
        return None
    probs = [math.comb(n, k) / 2 ** n for k in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[hits] * (1 + 1e-9)))


def confusion(pairs: list[tuple[str, str | None]]) -> dict:
    table = {a: {"up": 0, "down": 0, "none": 0} for a in ("up", "down")}
    for actual, pred in pairs:
        table[actual][pred or "none"] += 1
    return table


def score(pairs: list[tuple[str, str | None]], seed: int = 0) -> dict:
    hits = sum(a == p for a, p in pairs)
    return {"n": len(pairs), "accuracy": accuracy(pairs), "accuracy_ci95": bootstrap_ci(pairs, accuracy, seed),
            "mcc": mcc(pairs), "mcc_ci95": bootstrap_ci(pairs, mcc, seed), "binomial_p": binomial_p(hits, len(pairs)),
            "unparsable": sum(p is None for _, p in pairs)}


# ---------------------------------------------------------------- baselines and backtest


def _close_before(db: sqlite_utils.Database, stock: str, day: str) -> tuple[float, float] | None:
    rows = db.execute("SELECT close FROM prices WHERE stock = ? AND date <= ? ORDER BY date DESC LIMIT 2",
                      [stock, day]).fetchall()
    return (rows[1][0], rows[0][0]) if len(rows) == 2 else None


def baselines(db: sqlite_utils.Database, ds: list[Decision], seed: int = 0) -> dict:
    """Majority class of the TRAIN_DAYS trading days before the range, previous-day momentum, a seeded coin."""
    out: dict[str, dict] = {}
    majority_of = {}
    for stock in {d.stock for d in ds}:
        first = min(d.date for d in ds if d.stock == stock)
        closes = [c for (c,) in db.execute("SELECT close FROM prices WHERE stock = ? AND date < ? ORDER BY date DESC "
                                            "LIMIT ?", [stock, first, TRAIN_DAYS + 1]).fetchall()][::-1]
        labels = [label_of(b / a - 1) for a, b in zip(closes, closes[1:])]
        majority_of[stock] = "up" if labels.count("up") > labels.count("down") else "down"
    rng = random.Random(seed)
    momentum = []
    for d in ds:
        closes = _close_before(db, d.stock, d.date)
        momentum.append((d.actual, label_of(closes[1] / closes[0] - 1) if closes else None))
    out["majority"] = score([(d.actual, majority_of[d.stock]) for d in ds], seed)
    out["momentum"] = score(momentum, seed)
    out["random"] = score([(d.actual, rng.choice(["up", "down"])) for d in ds], seed)
    return out


def _curve_stats(returns: list[float]) -> dict:
    equity, peak, worst, curve = 1.0, 1.0, 0.0, []
    for r in returns:
        equity *= 1 + r
        peak = max(peak, equity)
        worst = min(worst, equity / peak - 1)
        curve.append(equity - 1)
    n = len(returns)
    mean = sum(returns) / n if n else 0.0
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1)) if n > 1 else 0.0
    return {"cumulative_return": equity - 1, "sharpe": mean / sd * math.sqrt(252) if sd else None,
            "max_drawdown": worst, "curve": curve}


def backtest(ds: list[Decision], threshold: float | None = None) -> dict:
    """Long on 상승, short on 하락 at each decision's close, out at the target close (equal weight per day).

    Below `threshold` confidence (or unparsable) the day is flat. Compared with buy-and-hold.
    """
    by_day: dict[str, list[tuple[float, float]]] = {}
    for d in ds:
        pos = {"up": 1.0, "down": -1.0}.get(d.label or "", 0.0)
        if threshold is not None and (d.confidence is None or d.confidence < threshold):
            pos = 0.0
        by_day.setdefault(d.date, []).append((pos, d.ret))
    days = sorted(by_day)
    strategy = [sum(p * r for p, r in by_day[x]) / len(by_day[x]) for x in days]
    hold = [sum(r for _, r in by_day[x]) / len(by_day[x]) for x in days]
    taken = [(p, r) for x in days for p, r in by_day[x] if p]
    return {"days": days, "threshold": threshold, "positions": len(taken),
            "hit_rate": sum(p * r > 0 for p, r in taken) / len(taken) if taken else None,
            "strategy": _curve_stats(strategy), "buy_and_hold": _curve_stats(hold)}


def evaluate(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None, *, seed: int = 0,
             threshold: float | None = None) -> dict:
    final = decisions(db, stocks, start, end, "final")
    if not final:
        raise BadInput(f"No stored predictions for {', '.join(stocks)} in that range; run `sep reflect` or a batch job first.")
    pairs = [(d.actual, d.label) for d in final]
    report = {"stocks": stocks, "start": final[0].date, "end": final[-1].date, **score(pairs, seed),
              "confusion": confusion(pairs), "baselines": baselines(db, final, seed), "ablations": {}}
    for which in ("trial0", "final", "best-of-n"):
        ds = final if which == "final" else decisions(db, stocks, start, end, which)
        if ds:
            report["ablations"][{"trial0": "trial_0_only", "final": "after_reflection", "best-of-n": "best_of_n"}[which]] = \
                score([(d.actual, d.label) for d in ds], seed)
    report["backtest"] = backtest(final, threshold)
    return report

