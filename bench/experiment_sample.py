"""The full walk-forward arm table on the bundled sample, with the embedded model and a few steps.

Imports the sample into a fresh database, dedups it, then runs `sep experiment` with every arm:
reflect over 2022-05-02..05-17, train SFT, reward, PPO and GRPO on those days only, forecast
each test day 2022-05-20..05-31 with each arm, and print the table (and its JSON with --json).

Run: .venv/bin/python bench/experiment_sample.py [--steps 4] [--trials 4] [--model NAME] [--summarizer extractive]
     [--base-url URL] [--json]
Every arm runs on one base: the sft/ppo/grpo arms are LoRA policies trained on the catalog model
that answers `base` and `memory` (default Qwen2.5-Coder-1.5B), run embedded with their llama.cpp
adapters; best_of_n samples that model and scores with a reward model on it. PPO holds one base
(policy LoRA, reference with the adapter off, value head on the same trunk): about 12.6 GB and
200 s an update on a 1.5B base (docs/training.md); GRPO samples groups of 8 (its default), about
730 s an update on the sample's prompts. On 2 cores this takes about 1-2 hours; figures are a
measurement of this sample, not a claim of skill: read the intervals, and remember the model may have read about these 2022 days in its training data.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sep.jobs import ARMS, ExperimentTable, Job
from sep.cli import render_experiment, stage_progress
from sep.experiment import Experiment
from sep.ingest import import_prices, import_texts
from sep.api.common import stdout_to_stderr
from sep.backends import make_llm
from sep.memory import open_memory
from sep.sample import sample_files
from sep.settings import SUMMARIZERS, Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--best-of", type=int, default=4)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--base-url")
    parser.add_argument("--model", help="A catalog model (default qwen2.5-coder-1.5b) or the server's model id.")
    parser.add_argument("--summarizer", choices=SUMMARIZERS, help="How days are summarized [auto].")
    parser.add_argument("--no-dedup", action="store_true")
    parser.add_argument("--keep", type=Path, help="Keep the database and runs in this folder.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="sep-experiment-"))
    folder.mkdir(parents=True, exist_ok=True)
    cfg = Settings().with_overrides(db=folder / "sep.db", base_url=args.base_url, model=args.model, trials=args.trials,
                                    summarizer=args.summarizer)
    db = open_memory(cfg.db)
    prices, texts = sample_files()
    import_prices(db, prices)
    import_texts(db, texts)
    err = Console(stderr=True)
    started = time.perf_counter()
    if not args.no_dedup:
        from sep.dedup import DedupConfig, Deduplicator

        Deduplicator(db, DedupConfig.from_settings(cfg), threads=cfg.threads).run("005930")
        err.print(f"dedup: {time.perf_counter() - started:.0f} s")
    exp = ExperimentTable(train_start="2022-05-02", train_end="2022-05-17", test_start="2022-05-20",
                          test_end="2022-05-31", arms=args.arms.split(","), steps=args.steps, best_of=args.best_of)
    job = Job(name="bench-sample", stocks=["005930"], start="2022-05-02", end="2022-05-31",
              trials=args.trials, experiment=exp)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err)
    on_progress = stage_progress(progress)

    t0 = time.perf_counter()
    with progress, stdout_to_stderr():  # the trainers print their logs: --json's stdout stays the report
        result = Experiment(db, job, job.settings(cfg), make_llm, on_progress, runs_dir=folder / "runs").run()
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**result, "seconds": round(seconds, 1)}, ensure_ascii=False, indent=2))
    else:
        render_experiment(result)
        print(f"{seconds:.0f} s in all ({result['model']}, {args.steps} steps per trainer, trials {args.trials}, "
              f"best of {args.best_of}); data in {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
