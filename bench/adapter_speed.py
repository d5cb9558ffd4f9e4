"""Decode and prefill speed of a trained policy (base GGUF + its llama.cpp LoRA adapter) against the
base model alone, on the same explain prompt of the bundled sample, greedy, in-process.

Issue 19's bar: decode through the adapter at least 0.8x the base model's.
Run: .venv/bin/python bench/adapter_speed.py runs/sft [--tokens 96] [--rounds 3] [--threads 2]
(`runs/sft`: any `sep train sft|ppo|grpo` run on a catalog base, e.g. after `sep demo`.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from sep.agents import Agents
from sep.ingest import import_prices, import_texts
from sep.backends import make_llm
from sep.backends.embedded import embedded_chat
from sep.llm import render_messages
from sep.memory import open_memory
from sep.models import local_model
from sep.sample import sample_files
from sep.settings import Settings
from sep.window import decision_window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy", type=Path, help="A `sep train` run folder on a catalog base.")
    parser.add_argument("--tokens", type=int, default=96, help="Tokens decoded per generation.")
    parser.add_argument("--rounds", type=int, default=3, help="Generations per model (alternating).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cfg = Settings(threads=args.threads)
    policy = make_llm(cfg.model_copy(update={"policy": args.policy}))
    base = embedded_chat(local_model(cfg.cache_dir, policy.chat.model_name), cfg)
    with tempfile.TemporaryDirectory() as tmp:
        db = open_memory(Path(tmp) / "sep.db")
        prices, texts = sample_files()
        import_prices(db, prices)
        import_texts(db, texts)
        window = decision_window(db, "005930", "2022-06-01", cfg.window_days)
        agents = Agents.for_stock(db, None, "005930", cfg.model_copy(update={"summarizer": "extractive"}))
        chat = agents.prompts["explain"].messages(**agents.explain_variables(window, agents.summaries(window), []))
    prompt = render_messages(base.chat_template, chat)
    speeds: dict[str, list[tuple[float, float]]] = {"base": [], "base + adapter": []}
    for _ in range(args.rounds):
        for name, model in (("base", base), ("base + adapter", policy.chat)):
            reply = model._complete(prompt, max_tokens=args.tokens, temperature=0.0, ignore_eos=True, cache_prompt=False)
            t = reply["timings"]
            speeds[name].append((t["prompt_per_second"], t["predicted_per_second"]))
    print(f"{policy.chat.model_name}, adapter {', '.join(policy.chat.lora)}; {args.threads} threads, "
          f"{reply['usage']['prompt_tokens']}-token explain prompt, {args.tokens} tokens decoded, {args.rounds} rounds")
    print(f"{'':16} {'prefill tok/s':>14} {'decode tok/s':>13}")
    medians = {}
    for name, runs in speeds.items():
        medians[name] = (statistics.median(p for p, _ in runs), statistics.median(d for _, d in runs))
        print(f"{name:16} {medians[name][0]:>14.1f} {medians[name][1]:>13.1f}")
    ratio = medians["base + adapter"][1] / medians["base"][1]
    print(f"decode ratio {ratio:.2f}x (bar: 0.80x), prefill ratio {medians['base + adapter'][0] / medians['base'][0]:.2f}x")


if __name__ == "__main__":
    main()
