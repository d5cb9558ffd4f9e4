"""`sep train ppo`: PPO (trl.experimental.ppo, the last TRL line that has it) on the pairs' prompts."""

from __future__ import annotations

import copy
from pathlib import Path

import sqlite_utils
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from trl.experimental.ppo import PPOConfig, PPOTrainer

from sep.errors import BadInput
from sep.settings import Settings
from sep.train.base import Base, load_policy, lora, turn_tokenizer
from sep.train.config import PPORunConfig
from sep.train.data import day_rows, training_rows
from sep.train.run import Run, execute_run, last_checkpoint, precision, save_adapter
from sep.train.scorers import HEAD_FILE, load_reward_model


def train_ppo(settings: Settings, cfg: PPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """PPO (trl.experimental.ppo) on the pairs' prompts: policy = SFT + LoRA, reference = the frozen
    policy (adapter off), value model initialised from the reward model. One step = one PPO update."""
    if not cfg.reward:
        raise BadInput("sep train ppo needs --reward DIR (a `sep train reward` run).")
    if (Path(cfg.reward) / HEAD_FILE).exists():
        raise BadInput(f"PPO's value model starts from the reward model's weights, and {cfg.reward} is an embedding "
                       "head: train the reward model with --head model for PPO.")
    rows, info = training_rows(db, cfg, day_rows(db, pairs, cfg.model), balanced=False)  # the reward model needs no labels
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")

    def body(run: Run, base: Base) -> dict:

        tok = turn_tokenizer(base)  # generation stops, the reward is read, and EOS is checked at the turn end
        tok.padding_side = "left"
        reward_model = load_reward_model(cfg.reward, settings, cfg.threads).model
        value_model = copy.deepcopy(reward_model).train()  # starts as the reward model, then learns values
        policy = load_policy(base, cfg.sft)
        resume = last_checkpoint(run.out)
        done = 0
        if resume and (Path(resume) / "adapter_config.json").exists():  # PPO has no trainer resume: reload the adapter
            policy = PeftModel.from_pretrained(policy, resume, is_trainable=True)
            done = int(Path(resume).name.split("-")[-1])
        else:
            policy = get_peft_model(policy, lora(cfg, "CAUSAL_LM", policy))
        remaining = max(cfg.max_steps - done, 0)
        prompts = [base.fmt.prompt(r["prompt"]) for r in rows]
        dataset = Dataset.from_list([{"input_ids": tok(p, truncation=True, max_length=cfg.max_length)["input_ids"]}
                                     for p in prompts])
        args = PPOConfig(output_dir=str(run.out / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
                         num_mini_batches=1, total_episodes=max(remaining, 1) * cfg.batch_size,
                         local_rollout_forward_batch_size=cfg.batch_size, num_ppo_epochs=1,
                         response_length=cfg.response_length, temperature=cfg.rollout_temperature,
                         stop_token_id=tok.eos_token_id, kl_coef=cfg.kl_coef,
                         missing_eos_penalty=cfg.missing_eos_penalty, learning_rate=cfg.learning_rate,
                         num_sample_generations=0, save_steps=cfg.save_steps, report_to=[], seed=cfg.seed,
                         logging_steps=1, **precision())
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
                             value_model=value_model, train_dataset=dataset)
        if remaining:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                trainer.train()
        updates = trainer.state.global_step if remaining else 0
        saved = save_adapter(run, trainer.model.policy, tok, base)
        ckpt = run.out / "checkpoints" / f"checkpoint-{done + updates}"
        trainer.model.policy.save_pretrained(ckpt)  # what a rerun resumes from
        logs = [h for h in trainer.state.log_history if "objective/scores" in h]
        return {"updates": updates, "resumed_from": resume, "total_updates": done + updates,
                "mean_score": logs[-1]["objective/scores"] if logs else None,
                "kl": logs[-1].get("objective/kl") if logs else None,
                "eos_share": logs[-1].get("val/num_eos_tokens", 0) / cfg.batch_size if logs else None, **saved}

    return execute_run(settings, cfg, db, rows, body, info, generated=cfg.response_length)
