"""Dedup speed: all 16,321 Samsung Naver Finance news titles (2022-02-07..06-01) in one refit.

Prints the report (input, exact/near duplicates, off-topic, kept, topics) and the seconds, split
into embedding, UMAP, HDBSCAN and the rest, plus the one-time import cost of BERTopic (numba).
Also runs the 1,206-post Naver board day. Goals on 2 cores: under 60 s for the news, and a
peak RSS under 1.5 GB (the largest single-stock set we have; a year of news is about as big).
Measured 2026-11-25: news 29.8 s (UMAP 21.9 s), peak RSS 1,430 MB; `sep dedup` on the same set
37 s wall, 1,464 MB.
Run: .venv/bin/python bench/dedup_speed.py [--data ../shared/data] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from sep.ingest import import_texts
from sep.memory import open_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--agreement", action="store_true",
                        help="also dedup the news with UMAP's approximate neighbours (pynndescent, sep's default "
                             "before exact ones) and compare the stories each keeps")
    args = parser.parse_args()
    t = time.perf_counter()
    import bertopic  # noqa: F401  (numba compiles on the first import in a fresh environment)
    import umap  # noqa: F401  (numba compiles its functions on their first call, cached on disk after it)

    from sep.dedup import DedupConfig, Deduplicator

    print(f"import bertopic+umap: {time.perf_counter() - t:.1f} s (once per process)")
    sets = [("Samsung news titles", args.data / "ko-text" / "samsung" / "samsung_raw_naver_finance_news.xlsx"),
            ("Naver board, one day", args.data / "naver-board" / "discussion_005930.csv")]
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in sets:
            db = open_memory(Path(tmp) / f"{path.stem}.db")
            import_texts(db, [path], stock="005930")
            rows = db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
            report = Deduplicator(db, DedupConfig(), threads=args.threads).run("005930", refit=True)
            print(f"\n{label}: {path.name}, {rows:,} rows stored")
            print(f"  input {report.input:,}, exact duplicates {report.exact_duplicates:,}, near duplicates "
                  f"{report.near_duplicates:,}, off-topic {report.off_topic:,}, kept {report.kept:,} over "
                  f"{report.days} days, topics {report.topics}")
            print(f"  {report.seconds:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  peak RSS of the process so far: {peak:,.0f} MB")
            for topic in report.topic_table[:5]:
                print(f"    topic {topic['topic']:>3} ({topic['size']:>4}) {topic['words'][:50]} | {topic['flag'] or ''}")
            if args.agreement and path.suffix == ".xlsx":
                agreement(db, args)
            db.conn.close()


def agreement(db, args: argparse.Namespace) -> None:
    """How many of the stories the default dedup keeps (exact neighbours) UMAP's approximate
    neighbour search (pynndescent) keeps too, over all days and per day."""
    from umap import UMAP

    from sep.dedup import DedupConfig, Deduplicator

    def kept() -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for day, text_id in db.execute("SELECT date, id FROM texts WHERE is_representative = 1"):
            out.setdefault(day, set()).add(text_id)
        return out

    first = kept()
    c = DedupConfig()
    approximate = UMAP(n_neighbors=c.n_neighbors, n_components=c.n_components, min_dist=0.0, metric="cosine",
                       random_state=c.seed, n_jobs=1)
    report = Deduplicator(db, c, umap_model=approximate, threads=args.threads).run("005930", refit=True)
    second = kept()
    days = set(first) | set(second)
    both = sum(len(first.get(d, set()) & second.get(d, set())) for d in days)
    n1, n2 = sum(map(len, first.values())), sum(map(len, second.values()))
    same_days = sum(first.get(d) == second.get(d) for d in days)
    print(f"  approximate neighbours (pynndescent): {report.seconds:.1f} s (" +
          ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()) + f"), topics {report.topics}")
    print(f"  kept stories: exact {n1:,}, approximate {n2:,}, both {both:,} = {both / max(n2, 1):.1%} of the "
          f"approximate choice; the same set on {same_days} of {len(days)} days")


if __name__ == "__main__":
    main()
