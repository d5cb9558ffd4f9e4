"""Seconds per step for SFT, reward, PPO and GRPO on this CPU (Gemma-3 270M + LoRA, batch 2).

Uses a small preference set built from real Samsung news titles of the bundled sample (chosen =
the direction the market took next day), so sequence lengths are realistic for titles.
Run: .venv/bin/python bench/train_speed.py [--steps 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sep.ingest import import_prices, import_texts
from sep.memory import open_memory
from sep.sample import sample_files
from sep.settings import Settings
from sep.train import (GRPORunConfig, PPORunConfig, RewardRunConfig, SFTRunConfig, train_grpo, train_ppo,
                       train_reward, train_sft)
from sep.window import decision_window, texts_in_window, trading_days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = Settings(threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db = open_memory(tmp / "sep.db")
        prices, texts = sample_files()
        import_prices(db, prices)
        import_texts(db, texts)
        words = {"up": "상승", "down": "하락"}
        rows = []
        for day in trading_days(db, "005930").between("2022-05-02", "2022-05-31"):
            w = decision_window(db, "005930", day, 1)
            titles = [t.title for t in texts_in_window(db, "005930", day, day)][:8]
            other = "down" if w.label == "up" else "up"
            prompt = f"삼성전자 {day} 뉴스:\n" + "\n".join(f"- {t}" for t in titles) + "\n내일 종가는 상승일까 하락일까?"
            rows.append({"prompt": prompt, "chosen": f"{words[w.label]}\n{titles[0] if titles else ''}",
                         "rejected": f"{words[other]}\n근거 없음", "ret": w.ret})
        pairs = tmp / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        sft = tmp / "sft.jsonl"
        sft.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}, ensure_ascii=False) + "\n"
                               for r in rows))
        print(f"{len(rows)} examples from the sample, {args.steps} steps each, {args.threads} threads")
        common = dict(max_steps=args.steps, save_steps=10_000, threads=args.threads)
        jobs = [("sft", lambda: train_sft(settings, SFTRunConfig(out=tmp / "sft", **common), db, sft)),
                ("reward", lambda: train_reward(settings, RewardRunConfig(out=tmp / "rm", **common), db, pairs)),
                ("ppo", lambda: train_ppo(settings, PPORunConfig(out=tmp / "ppo", reward=tmp / "rm", sft=tmp / "sft",
                                                                 **common), db, pairs)),
                ("grpo", lambda: train_grpo(settings, GRPORunConfig(out=tmp / "grpo", sft=tmp / "sft", **common), db, pairs))]
        results = []
        for name, job in jobs:
            t = time.perf_counter()
            metrics = job()
            seconds = time.perf_counter() - t
            steps = metrics.get("steps") or metrics.get("updates") or args.steps
            results.append((name, seconds, steps, metrics))
        print(f"\n{'trainer':8} {'steps':>5} {'total s':>8} {'s/step':>7}  (total includes loading the models)")
        for name, seconds, steps, metrics in results:
            print(f"{name:8} {steps:>5} {seconds:>8.1f} {seconds / steps:>7.2f}  "
                  + ", ".join(f"{k}={v:.3g}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    main()
