"""Dedup at scale: a million titles synthesized from the real ones, one stock at a time.

The bundled sample's 3,835 Naver Finance titles (or `--titles-from` an .xlsx/.csv of titles) are
spread over `--stocks` synthetic stocks and the trading days of a year: every (stock, day) draws
a few stories, each told several times (Zipf-like coverage) with perturbations a feed really
has: the company renamed to the stock's, a [속보]/[단독] tag, a word dropped or repeated, a number
changed, spacing and punctuation changed. Stocks stream through one SQLite memory: a stock's
texts are inserted, `Deduplicator.run` keeps each day's stories, the stock's rows are counted
and the next stock follows, so memory holds one stock's embeddings at a time.

Prints titles per second, the split (embedding, reducer, HDBSCAN, the rest), the peak RSS, and
how many titles were kept per (stock, day). Goal on 2 cores: 1M titles < 15 min, < 8 GB.

Run: .venv/bin/python bench/dedup_scale.py [--titles 1000000] [--stocks 100] [--days 250]
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

TAGS = ["[속보]", "[단독]", "[특징주]", "[종합]", "(종합)", "[마감시황]", ""]


def real_titles(path: Path | None) -> list[str]:
    import pandas as pd

    from sep.sample import sample_files

    source = path or sample_files()[1][0]
    frame = pd.read_excel(source) if source.suffix == ".xlsx" else pd.read_csv(source)
    column = next(c for c in frame.columns if str(c).lower() in ("title", "제목", "titles"))
    return [t for t in frame[column].dropna().astype(str).unique() if len(t) > 8]


def perturb(title: str, name: str, rng: random.Random, rate: float) -> str:
    """The story's title under the stock's name; with probability `rate`, reworded the way outlets do."""
    text = re.sub(r"삼성전자|삼성", name, title)
    if rng.random() >= rate:
        return text  # most copies of a story repeat its title verbatim (77% of the real Samsung feed's rows)
    words = text.split()
    roll = rng.random()
    if roll < 0.2 and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif roll < 0.3 and words:
        i = rng.randrange(len(words))
        words.insert(i, words[i])
    text = " ".join(words)
    if rng.random() < 0.2:
        text = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text, count=1)
    if rng.random() < 0.3:
        text = f"{rng.choice(TAGS)} {text}".strip()
    if rng.random() < 0.2:
        text = text.replace(" ", "  ", 1).replace("…", "...")
    return text


def trading_days(n: int) -> list[str]:
    out, d = [], date(2022, 1, 3)
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def synthesize(stock: int, days: list[str], per_day: int, pool: list[str], seed: int, rate: float) -> list[tuple]:
    """(id, stock, date, title) rows of one stock: per day a few stories, each told 1..n times."""
    rng = random.Random(seed * 100_003 + stock)
    code, name = f"{900000 + stock:06d}", f"가상종목{stock}"
    rows = []
    for day in days:
        n = 0
        while n < per_day:
            story = rng.choice(pool)
            copies = min(per_day - n, max(1, int(rng.paretovariate(0.8))))
            for _ in range(copies):
                rows.append((code, day, perturb(story, name, rng, rate)))
            n += copies
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=int, default=1_000_000)
    parser.add_argument("--stocks", type=int, default=100)
    parser.add_argument("--days", type=int, default=250, help="trading days per stock")
    parser.add_argument("--titles-from", type=Path, help="real titles to synthesize from (default: the sample)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reword", type=float, default=0.15,
                        help="share of a story's copies reworded; 0.15 gives about the real feed's exact and near "
                             "duplicate rates (77%% and 2%% of the 16,321 Samsung rows)")
    args = parser.parse_args()

    t = time.perf_counter()
    from sep.dedup import DedupConfig, Deduplicator, make_embedder
    from sep.memory import open_memory, transaction

    pool = real_titles(args.titles_from)
    per_day = max(1, args.titles // (args.stocks * args.days))
    days = trading_days(args.days)
    config = DedupConfig()
    embedder = make_embedder(config.embedder, args.threads)
    print(f"{len(pool):,} real titles → {args.stocks} stocks × {args.days} days × {per_day} titles = "
          f"{args.stocks * args.days * per_day:,} titles; setup {time.perf_counter() - t:.1f} s",
          flush=True)
    totals: Counter = Counter()
    kept_per_day: list[int] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_memory(Path(tmp) / "scale.db")
        next_id = 1
        for s in range(args.stocks):
            rows = synthesize(s, days, per_day, pool, args.seed, args.reword)
            code = rows[0][0]
            with transaction(db):
                db.execute("INSERT OR IGNORE INTO stocks (stock, name) VALUES (?, ?)", [code, f"가상종목{s}"])
                db.conn.executemany(
                    "INSERT INTO texts (id, stock, date, published_at, source, title, content_key) VALUES (?,?,?,?,?,?,?)",
                    [(next_id + i, st, d, f"{d}T09:00:00+09:00", "news", title, f"scale-{next_id + i}")
                     for i, (st, d, title) in enumerate(rows)])
            next_id += len(rows)
            report = Deduplicator(db, config, embedder=embedder, threads=args.threads).run(code)
            totals["titles"] += report.input
            totals["exact"] += report.exact_duplicates
            totals["near"] += report.near_duplicates
            totals["off_topic"] += report.off_topic
            totals["kept"] += report.kept
            for k, v in report.timings.items():
                totals[k] += v
            kept_per_day += [n for (n,) in db.execute(
                "SELECT SUM(is_representative) FROM texts WHERE stock = ? GROUP BY date", [code])]
            with transaction(db):  # the stock is done: its texts leave the working memory
                db.execute("DELETE FROM texts WHERE stock = ?", [code])
            elapsed = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
            print(f"  stock {s + 1}/{args.stocks}: {totals['titles']:,} titles in {elapsed:.0f} s "
                  f"({totals['titles'] / elapsed:,.0f}/s), peak RSS {peak:.2f} GB", flush=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"\n{totals['titles']:,} titles in {elapsed / 60:.1f} min ({totals['titles'] / elapsed:,.0f} titles/s), "
          f"peak RSS {peak:.2f} GB")
    print(f"exact duplicates {totals['exact']:,} ({totals['exact'] / totals['titles']:.0%}), near duplicates "
          f"{totals['near']:,} ({totals['near'] / totals['titles']:.0%}), off-topic {totals['off_topic']:,}, "
          f"kept {totals['kept']:,} ({sum(kept_per_day) / max(len(kept_per_day), 1):.1f} per stock-day)")
    print("seconds: " + ", ".join(f"{k} {totals[k]:.0f}" for k in ("embedding", "reducer", "hdbscan", "rest")))


if __name__ == "__main__":
    main()
