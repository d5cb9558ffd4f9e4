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
    args = parser.parse_args()
    t = time.perf_counter()
    import bertopic  # noqa: F401  (numba compiles on the first import in a fresh environment)
    import umap  # noqa: F401

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
            db.conn.close()


if __name__ == "__main__":
    main()
