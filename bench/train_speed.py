"""Seconds per step and peak memory of SFT, reward (both heads), PPO and GRPO on this CPU, per base model.

Uses a small preference set built from real Samsung news titles of the bundled sample (chosen =
the direction the market took next day), so sequence lengths are realistic for titles. Each
trainer runs in its own process, so its peak RSS is its own. A trainer that the memory check
refuses before loading prints the refusal instead. PPO holds one base (reference = adapter off, value
= a head on the policy) with the market reward; GRPO samples 4 completions of 160 tokens per prompt; each
samples through transformers (`ppo`, `grpo`) and through llama.cpp with the current adapter (`ppo-llama.cpp`,
`grpo-llama.cpp`).
Run: .venv/bin/python bench/train_speed.py [--base-models qwen2.5-coder-1.5b,gemma-270m] [--steps 2] [--threads 2]
     [--trainers sft,grpo-llama.cpp] [--lora-layers N] [--precision auto|fp32|bf16] [--rollout-slots N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

from sep.errors import BadInput
from sep.ingest import import_prices, import_texts
from sep.memory import open_memory
from sep.sample import sample_files
from sep.settings import Settings
from sep.window import decision_window, texts_in_window, trading_days


def sample_files_for_training(tmp: Path) -> tuple[Path, Path]:
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
    return sft, pairs


def one(kind: str, base: str, tmp: Path, steps: int, threads: int, lora_layers: int | None, precision: str,
        rollout_slots: int | None, queue: multiprocessing.Queue) -> None:
    """Run one trainer in this (child) process; report seconds, steps, peak RSS and its metrics."""
    from sep import train

    settings = Settings(threads=threads)
    sft, pairs = tmp / "sft.jsonl", tmp / "pairs.jsonl"
    common = dict(max_steps=steps, save_steps=10_000, threads=threads, base_model=base, precision=precision,
                  **({} if lora_layers is None or kind.startswith(("sft", "reward")) else {"lora_layers": lora_layers}),
                  **({} if rollout_slots is None or not kind.endswith("llama.cpp") else {"rollout_slots": rollout_slots}))
    out = tmp / base
    group = {**common, "batch_size": 4, "num_generations": 4, "max_completion_length": 160}
    jobs = {
        "sft": lambda: train.train_sft(settings, train.SFTRunConfig(out=out / "sft", **common), None, sft),
        "reward": lambda: train.train_reward(settings, train.RewardRunConfig(out=out / "rm", **common), None, pairs),
        "reward-embedding": lambda: train.train_reward(
            settings, train.RewardRunConfig(out=out / "rm-head", head="embedding", **common), None, pairs),
        "ppo": lambda: train.train_ppo(settings, train.PPORunConfig(out=out / "ppo", sft=out / "sft", rollouts="transformers",
                                                                    **{**common, "batch_size": 1}), None, pairs),
        "ppo-llama.cpp": lambda: train.train_ppo(settings, train.PPORunConfig(
            out=out / "ppo-llama", sft=out / "sft", rollouts="llama.cpp", **{**common, "batch_size": 1}), None, pairs),
        "grpo": lambda: train.train_grpo(settings, train.GRPORunConfig(out=out / "grpo", sft=out / "sft",
                                                                       rollouts="transformers", **group), None, pairs),
        "grpo-llama.cpp": lambda: train.train_grpo(settings, train.GRPORunConfig(
            out=out / "grpo-llama", sft=out / "sft", rollouts="llama.cpp", **group), None, pairs),
    }
    started = time.perf_counter()
    try:
        metrics = jobs[kind]()
        error = None
    except BadInput as exc:
        metrics, error = {}, str(exc)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put({"kind": kind, "seconds": seconds, "peak": peak, "error": error,
               "steps": metrics.get("steps") or metrics.get("updates") or (steps if kind != "reward-embedding" else 0),
               "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                           and k not in ("steps", "updates", "total_updates", "examples")}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-models", default="qwen2.5-coder-1.5b,gemma-270m")
    parser.add_argument("--trainers", default="sft,reward,reward-embedding,ppo,ppo-llama.cpp,grpo,grpo-llama.cpp")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lora-layers", type=int, help="PPO's and GRPO's --lora-layers (default: each trainer's own).")
    parser.add_argument("--precision", default="auto", help="Every trainer's --precision: auto, fp32 or bf16.")
    parser.add_argument("--rollout-slots", type=int, help="The llama.cpp rows' --rollout-slots (default: the trainer's own).")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample_files_for_training(tmp)
        rows = len((tmp / "pairs.jsonl").read_text().splitlines())
        print(f"{rows} examples from the sample, {args.steps} steps each, batch 2, {args.threads} threads, "
              f"precision {args.precision}, rollout slots {args.rollout_slots or 'default'}; "
              "each trainer in its own process (total includes loading the models)")
        for base in args.base_models.split(","):
            print(f"\n{base}\n{'trainer':17} {'steps':>5} {'total s':>8} {'s/step':>7} {'peak GB':>8}")
            for kind in args.trainers.split(","):
                queue = context.Queue()
                child = context.Process(target=one, args=(kind, base, tmp, args.steps, args.threads,
                                                                  args.lora_layers, args.precision,
                                                                  args.rollout_slots, queue))
                child.start()
                child.join()
                if child.exitcode != 0:
                    print(f"{kind:17} failed (exit {child.exitcode})")
                    continue
                r = queue.get()
                if r["error"]:
                    print(f"{kind:17} refused before loading: {r['error']}")
                    continue
                per_step = r["seconds"] / r["steps"] if r["steps"] else float("nan")
                print(f"{kind:17} {r['steps']:>5} {r['seconds']:>8.1f} {per_step:>7.2f} {r['peak'] / 1e9:>8.1f}  "
                      + ", ".join(f"{k}={v:.3g}" for k, v in r["metrics"].items()))


if __name__ == "__main__":
    main()
