"""Batch efficiency against a fixed-latency OpenAI-compatible server on 127.0.0.1.

efficiency = requests × latency / concurrency / (last reply − first request); 1.0 means the
server always had `concurrency` requests in flight. Goal: ≥ 0.8 at concurrency 16–32 with 1 s.
Data: KRX prices of the first N stocks of ../shared/data/krx-prices plus the bundled Samsung news,
May 2022, 2 trials (the scripted server answers right or wrong at random, seeded).
Run: .venv/bin/python bench/batch_efficiency.py [--latency 1.0] [--stocks 12] [--concurrency 16 32]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scripted server the tests use (the only fake: the LLM server)

from fake_openai import FakeOpenAI  # noqa: E402

from sep.batch import BatchRunner  # noqa: E402
from sep.jobs import load_job  # noqa: E402
from sep.ingest import import_prices, import_texts  # noqa: E402
from sep.backends import make_llm  # noqa: E402
from sep.memory import open_memory  # noqa: E402
from sep.sample import sample_files  # noqa: E402
from sep.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--stocks", type=int, default=12)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    args = parser.parse_args()
    files = sorted(p for p in (args.data / "krx-prices").glob("*.csv") if p.name != "stock_list.csv")[: args.stocks]
    rng = random.Random(0)

    def script(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return "- 요약"
        if kind == "reflect":
            return "다음에는 수급을 더 보자."
        return rng.choice(["상승\n수급 개선.", "하락\n금리 부담."])

    for concurrency in args.concurrency:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = Path(tmp) / "sep.db"
            db = open_memory(db_path)
            prices, texts = sample_files()
            import_prices(db, files + prices)
            import_texts(db, texts)
            stocks = [s for (s,) in db.execute("SELECT DISTINCT stock FROM prices ORDER BY stock").fetchall()]
            db.conn.close()
            with FakeOpenAI(script, latency=args.latency) as server:
                job_file = Path(tmp) / "job.toml"
                job_file.write_text(
                    f'name = "bench"\nstocks = {stocks!r}\nstart = "2022-05-02"\nend = "2022-05-31"\ntrials = 2\n'
                    f'concurrency = {concurrency}\n[llm]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n'
                    .replace("'", '"'))
                cfg = Settings(db=db_path, retries=1)
                report = BatchRunner(load_job(job_file), cfg, make_llm).run()
                first = min(a for a, _ in server.spans)
                last = max(b for _, b in server.spans)
                requests = len(server.spans)
                efficiency = requests * args.latency / concurrency / (last - first)
                print(f"concurrency {concurrency:>3}: {report.done} stock-days ({len(stocks)} stocks), {requests} requests "
                      f"({report.summaries} summaries), max in flight {server.max_in_flight}, first request → last reply "
                      f"{last - first:.1f} s, efficiency {efficiency:.2f}")


if __name__ == "__main__":
    main()
