"""How many GRPO groups carry a learning signal (issue 34, item 3): rollouts of the default model through
llama.cpp, as `sep train grpo --rollouts llama.cpp` samples them, with and without the inference grammar.

For each of the first N forecast prompts in a memory (their realised returns from its prices), G
completions are sampled (`sep train grpo`'s defaults: 8 at temperature 1.3) and scored by the market
reward. A group whose G rewards are all equal has no advantage, so it teaches nothing. Printed per mode: groups with a signal,
completions that reached a label, seconds.

Run: .venv/bin/python bench/grpo_signal.py --db MEMORY [--prompts 8] [--group 8] [--threads 2] [--temperature 1.3]
     [--modes free,grammar]
(a memory after `sep reflect` or an experiment on the default model; the data are 2020-2022, older
than the model, so nothing here is skill).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from peft import get_peft_model

from sep.llm import as_messages, parse_answer
from sep.memory import PredictionStore, open_memory
from sep.models import DEFAULT_MODEL
from sep.settings import Settings
from sep.train import (GRPORunConfig, LlamaRollouts, MarketFeedback, TrainingBase, answer_shapes, load_policy, lora,
                       rollout_sampler, turn_tokenizer, with_returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=GRPORunConfig().num_generations)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=GRPORunConfig().rollout_temperature)
    parser.add_argument("--modes", default="free,grammar", help="free, grammar or both (comma-separated)")
    args = parser.parse_args()
    settings = Settings(threads=args.threads)
    db = open_memory(args.db)
    rows = [{"prompt": as_messages(p), "stock": s, "date": d} for p, s, d in PredictionStore(db).first_prompts(DEFAULT_MODEL)]
    rows = with_returns(db, rows[:args.prompts])
    base = TrainingBase.resolve(settings, DEFAULT_MODEL)
    tok = turn_tokenizer(base)
    plain = load_policy(base, None)
    policy = get_peft_model(plain, lora(GRPORunConfig(), "CAUSAL_LM", plain))  # B = 0: the base model itself
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              model=policy, processing_class=tok)
    feedback = MarketFeedback("market", base.fmt)
    print(f"{len(rows)} prompts x {args.group} completions of at most 160 tokens, temperature {args.temperature}, "
          f"{args.threads} threads")
    for mode in args.modes.split(","):
        shapes = answer_shapes(rows, base.fmt, settings) if mode == "grammar" else {}
        with tempfile.TemporaryDirectory() as tmp:
            rollouts = LlamaRollouts(rollout_sampler(settings, base, args.threads), base.folder, tok.eos_token_id, 160,
                                     args.temperature, settings.seed, Path(tmp), shapes=shapes)
            started, signal, labelled = time.perf_counter(), 0, 0
            for r in rows:
                prompt = base.fmt.prompt(r["prompt"])
                out = rollouts([prompt] * args.group, trainer)
                texts = [tok.decode(ids, skip_special_tokens=True) for ids in out["completion_ids"]]
                rewards = feedback(texts, [r["prompt"]] * args.group, [r["ret"]] * args.group)
                signal += max(rewards) - min(rewards) > 1e-12
                labelled += sum(parse_answer(t).label is not None for t in texts)
            print(f"  {mode:8}: {signal} of {len(rows)} groups carry a signal; {labelled} of {len(rows) * args.group} "
                  f"completions reached a label; {time.perf_counter() - started:.0f} s ({rollouts.tokens} tokens)")


if __name__ == "__main__":
    main()
