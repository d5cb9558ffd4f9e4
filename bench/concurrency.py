"""Requests in flight: a batch job and a walk-forward experiment against a fixed-latency server.

Both decide through `sep.decide`. efficiency = ideal / measured, where ideal = requests ×
latency / concurrency (the server always had `concurrency` requests in flight) and measured =
last reply − first request. Goal (issue 23): the experiment at concurrency 64 within 1/0.9 of
the ideal (efficiency ≥ 0.9).
Data: KRX prices of the first N stocks of ../shared/data/krx-prices plus the bundled Samsung
news, 2 trials (the scripted server answers right or wrong at random, seeded). The batch decides
May 2022; the experiment reflects on 2022-03-02..04-15 and forecasts 04-20..05-31 with the
base and memory arms.
Run: .venv/bin/python bench/concurrency.py [--latency 1.0] [--stocks 12] [--concurrency 16 64]
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
from sep.experiment import Experiment  # noqa: E402
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
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--only", choices=["batch", "experiment"], help="Run one of the two.")
    args = parser.parse_args()
    files = sorted(p for p in (args.data / "krx-prices").glob("*.csv") if p.name != "stock_list.csv")[: args.stocks]
    rng = random.Random(0)

    def script(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return "- 요약"
        if kind == "reflect":
            return "다음에는 수급을 더 보자."
        return rng.choice(["상승\n수급 개선.", "하락\n금리 부담."])

    def measured(server: FakeOpenAI, concurrency: int) -> str:
        first = min(a for a, _ in server.spans)
        last = max(b for _, b in server.spans)
        requests = len(server.spans)
        ideal = requests * args.latency / concurrency
        return (f"{requests} requests, max in flight {server.max_in_flight}, first request → last reply "
                f"{last - first:.1f} s, ideal {ideal:.1f} s, efficiency {ideal / (last - first):.2f}")

    for concurrency in args.concurrency:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = Path(tmp) / "sep.db"
            db = open_memory(db_path)
            prices, texts = sample_files()
            import_prices(db, files + prices)
            import_texts(db, texts)
            stocks = [s for (s,) in db.execute("SELECT DISTINCT stock FROM prices ORDER BY stock").fetchall()]
            db.conn.close()
            cfg = Settings(db=db_path, retries=1)
            head = (f'stocks = {stocks!r}\ntrials = 2\nconcurrency = {concurrency}\n').replace("'", '"')
            if args.only != "experiment":
                with FakeOpenAI(script, latency=args.latency) as server:
                    job_file = Path(tmp) / "job.toml"
                    job_file.write_text(f'name = "bench"\nstart = "2022-05-02"\nend = "2022-05-31"\n{head}'
                                        f'[llm]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n')
                    report = BatchRunner(load_job(job_file), cfg, make_llm).run()
                    print(f"batch      concurrency {concurrency:>3}: {report.done} stock-days ({len(stocks)} stocks), "
                          f"{measured(server, concurrency)}")
            if args.only != "batch":
                with FakeOpenAI(script, latency=args.latency) as server:
                    job_file = Path(tmp) / "experiment.toml"
                    job_file.write_text(
                        f'name = "bench-walk"\nstart = "2022-03-02"\nend = "2022-05-31"\n{head}'
                        f'[llm]\nbase_url = "{server.base_url}"\nmodel = "other-model"\n'
                        '[experiment]\ntrain_start = "2022-03-02"\ntrain_end = "2022-04-15"\n'
                        'test_start = "2022-04-20"\ntest_end = "2022-05-31"\narms = ["base", "memory"]\n')
                    job = load_job(job_file)
                    db = open_memory(db_path)
                    result = Experiment(db, job, job.settings(cfg), make_llm).run()
                    print(f"experiment concurrency {concurrency:>3}: {result['train']['days']} train and "
                          f"{result['test']['days']} test stock-days, {measured(server, concurrency)}")


if __name__ == "__main__":
    main()
