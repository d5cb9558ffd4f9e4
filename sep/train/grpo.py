"""`sep train grpo`: market-feedback GRPO (RLMF) with TRL's GRPOTrainer; the reward is `sep.train.rewards`'."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import sqlite_utils
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from sep.errors import BadInput
from sep.llm import content_text
from sep.settings import Settings
from sep.train.base import TrainingBase, launch_rank, load_policy, lora, turn_tokenizer
from sep.train.config import GRPORunConfig
from sep.train.data import day_rows, market_rows, training_rows
from sep.train.rewards import with_signal_instruction
from sep.train.rollouts import llama_rollouts, rollout_counts
from sep.train.run import Run, execute_run, save_adapter, train_with_resume, trainer_args
from sep.train.scorers import MarketFeedback


def group_accumulation(batch_size: int, group: int) -> int:
    """Micro-batches per update, so that one update sees whole groups while memory holds only
    `batch_size` completions at a time (each process of a data-parallel launch its own): a group of 8
    on a laptop is 4 micro-batches of 2. TRL samples one generation batch per update."""
    per_step = batch_size * launch_rank()[1]
    return math.lcm(per_step, group) // per_step


def group_counts(log_history: list[dict], per_update: int) -> dict[str, int]:
    """Groups sampled, and those whose rewards were all equal (they teach nothing), from what TRL logs
    each update over every process's completions (`per_update` groups an update): a process's reward
    function sees only its share of a group when a data-parallel launch splits one."""
    shares = [h["frac_reward_zero_std"] for h in log_history if "frac_reward_zero_std" in h]
    return {"groups": per_update * len(shares), "zero_variance_groups": sum(round(f * per_update) for f in shares)}


def train_grpo(settings: Settings, config: GRPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """RLMF with TRL GRPOTrainer: the reward is the realized next-day return signed by the answer
    (`market_reward`), optionally mixed with the reward model (`both`) or only the model (`model`)."""
    rows, info = training_rows(db, config, day_rows(db, pairs, config.model), balanced=False)  # the market gives the reward
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")
    rows, market_scale = market_rows(db, rows, config.reward_kind)
    if config.signal_score:  # the prompt must ask for the score the reward reads
        rows = [{**r, "prompt": with_signal_instruction(r["prompt"])} for r in rows]

    def body(run: Run, base: TrainingBase) -> dict:
        tok = turn_tokenizer(base)  # completions end at the turn end
        feedback = MarketFeedback.of(config, settings, base.fmt, market_scale)

        def rlmf(prompts: list[str], completions: list[str], ret: list[float] | None = None,
                 chat: list[str] | None = None, day: list[str] | None = None, **_: Any) -> list[float]:
            return feedback([content_text(c) for c in completions], chat, ret, day)

        data = [{"prompt": base.fmt.prompt(r["prompt"]), "chat": json.dumps(r["prompt"], ensure_ascii=False),
                 "day": r.get("date") or "", **({"ret": float(r["ret"])} if "ret" in r else {})} for r in rows]
        args = trainer_args(config, GRPOConfig, num_generations=config.num_generations,
                             gradient_accumulation_steps=group_accumulation(config.batch_size, config.num_generations),
                             max_completion_length=config.max_completion_length, temperature=config.rollout_temperature)
        model = load_policy(base, config.sft)
        rollouts, where = llama_rollouts(settings, config, base, tok, rows, run.out / "rollouts",
                                         config.max_completion_length, args.temperature)
        trainer = GRPOTrainer(model=model, reward_funcs=rlmf, args=args,
                              train_dataset=Dataset.from_list(data), processing_class=tok,
                              peft_config=lora(config, "CAUSAL_LM", model), rollout_func=rollouts)
        metrics = train_with_resume(run, trainer)
        saved = save_adapter(run, trainer.model, tok, base)
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {**metrics, "mean_reward": sum(rewards) / len(rewards) if rewards else None,
                "market_scale": market_scale, "rollouts": where, **rollout_counts(rollouts),
                **group_counts(trainer.state.log_history, args.generation_batch_size // config.num_generations),
                **saved}

    return execute_run(settings, config, db, rows, body, info, generated=config.max_completion_length)
