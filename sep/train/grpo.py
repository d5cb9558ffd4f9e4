"""`sep train grpo`: market-feedback GRPO (RLMF) with TRL's GRPOTrainer; the reward is `sep.train.rewards`'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from sep.errors import BadInput
from sep.llm import content_text
from sep.settings import Settings
from sep.train.base import TrainingBase, load_policy, lora, turn_tokenizer
from sep.train.config import GRPORunConfig
from sep.train.data import day_rows, training_rows, with_returns
from sep.train.rewards import rlmf_rewards, with_signal_instruction
from sep.train.run import Run, execute_run, save_adapter, train_with_resume, trainer_args
from sep.train.scorers import load_reward


def train_grpo(settings: Settings, config: GRPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """RLMF with TRL GRPOTrainer: the reward is the realized next-day return signed by the answer
    (`market_reward`), optionally mixed with the reward model (`both`) or only the model (`model`)."""
    if config.batch_size % config.num_generations:
        raise BadInput(f"--batch-size {config.batch_size} must be a multiple of --num-generations {config.num_generations}.")
    if config.reward_kind != "market" and not config.reward:
        raise BadInput(f"--reward-kind {config.reward_kind} needs --reward DIR (a `sep train reward` run).")
    rows, info = training_rows(db, config, day_rows(db, pairs, config.model), balanced=False)  # the market gives the reward
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")
    if config.reward_kind != "model":
        rows = with_returns(db, rows)
    if config.signal_score:  # the prompt must ask for the score the reward reads
        rows = [{**r, "prompt": with_signal_instruction(r["prompt"])} for r in rows]
    market_scale = sum(abs(float(r["ret"])) for r in rows) / len(rows) if config.reward_kind != "model" else 1.0

    def body(run: Run, base: TrainingBase) -> dict:


        tok = turn_tokenizer(base)  # completions end at the turn end
        rm = load_reward(config.reward, settings, config.threads) if config.reward_kind != "market" else None
        seen: list[float] = []  # the reward model's scores so far: their spread is its scale

        def rlmf(prompts: list[str], completions: list[str], ret: list[float] | None = None,
                 chat: list[str] | None = None, **_: Any) -> list[float]:
            texts = [content_text(c) for c in completions]
            scores = [rm.scores(c, [base.fmt.strip(t)])[0] for c, t in zip(chat, texts)] if rm else None
            return rlmf_rewards(texts, ret, config.reward_kind, scores, seen, market_scale=market_scale,
                                model_weight=config.model_weight,
                                signal_threshold=config.signal_threshold if config.signal_score else None)

        data = [{"prompt": base.fmt.prompt(r["prompt"]), "chat": json.dumps(r["prompt"], ensure_ascii=False),
                 **({"ret": float(r["ret"])} if "ret" in r else {})} for r in rows]
        args = trainer_args(config, GRPOConfig, num_generations=config.num_generations,
                             max_completion_length=config.max_completion_length, temperature=0.9)
        model = load_policy(base, config.sft)
        trainer = GRPOTrainer(model=model, reward_funcs=rlmf, args=args,
                              train_dataset=Dataset.from_list(data), processing_class=tok,
                              peft_config=lora(config, "CAUSAL_LM", model))
        metrics = train_with_resume(run, trainer)
        saved = save_adapter(run, trainer.model, tok, base)
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {**metrics, "mean_reward": sum(rewards) / len(rewards) if rewards else None,
                "market_scale": market_scale, **saved}

    return execute_run(settings, config, db, rows, body, info, generated=config.max_completion_length)
