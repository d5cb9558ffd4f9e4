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
from sep.train.base import TrainingBase, load_policy, lora, turn_tokenizer
from sep.train.config import PPORunConfig
from sep.train.data import day_rows, training_rows
from sep.train.run import Run, execute_run, last_checkpoint, precision, save_adapter
from sep.train.scorers import HEAD_FILE, load_reward_model


def train_ppo(settings: Settings, config: PPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """PPO (trl.experimental.ppo) on the pairs' prompts: policy = SFT + LoRA, reference = the frozen
    policy (adapter off), value model initialised from the reward model. One step = one PPO update."""
    if not config.reward:
        raise BadInput("sep train ppo needs --reward DIR (a `sep train reward` run).")
    if (Path(config.reward) / HEAD_FILE).exists():
        raise BadInput(f"PPO's value model starts from the reward model's weights, and {config.reward} is an embedding "
                       "head: train the reward model with --head model for PPO.")
    rows, info = training_rows(db, config, day_rows(db, pairs, config.model), balanced=False)  # the reward model needs no labels
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")

    def body(run: Run, base: TrainingBase) -> dict:

        tok = turn_tokenizer(base)  # generation stops, the reward is read, and EOS is checked at the turn end
        tok.padding_side = "left"
        reward_model = load_reward_model(config.reward, settings, config.threads).model
        value_model = copy.deepcopy(reward_model).train()  # starts as the reward model, then learns values
        policy = load_policy(base, config.sft)
        resume = last_checkpoint(run.out)
        done = 0
        if resume and (Path(resume) / "adapter_config.json").exists():  # PPO has no trainer resume: reload the adapter
            policy = PeftModel.from_pretrained(policy, resume, is_trainable=True)
            done = int(Path(resume).name.split("-")[-1])
        else:
            policy = get_peft_model(policy, lora(config, "CAUSAL_LM", policy))
        remaining = max(config.max_steps - done, 0)
        prompts = [base.fmt.prompt(r["prompt"]) for r in rows]
        dataset = Dataset.from_list([{"input_ids": tok(p, truncation=True, max_length=config.max_length)["input_ids"]}
                                     for p in prompts])
        args = PPOConfig(output_dir=str(run.out / "checkpoints"), per_device_train_batch_size=config.batch_size,
                         num_mini_batches=1, total_episodes=max(remaining, 1) * config.batch_size,
                         local_rollout_forward_batch_size=config.batch_size, num_ppo_epochs=1,
                         response_length=config.response_length, temperature=config.rollout_temperature,
                         stop_token_id=tok.eos_token_id, kl_coef=config.kl_coef,
                         missing_eos_penalty=config.missing_eos_penalty, learning_rate=config.learning_rate,
                         num_sample_generations=0, save_steps=config.save_steps, report_to=[], seed=config.seed,
                         logging_steps=1, **precision())
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
                             value_model=value_model, train_dataset=dataset)
        if remaining:
            with torch.random.fork_rng():
                torch.manual_seed(config.seed)
                trainer.train()
        updates = trainer.state.global_step if remaining else 0
        saved = save_adapter(run, trainer.model.policy, tok, base)
        ckpt = run.out / "checkpoints" / f"checkpoint-{done + updates}"
        trainer.model.policy.save_pretrained(ckpt)  # what a rerun resumes from
        logs = [h for h in trainer.state.log_history if "objective/scores" in h]
        return {"updates": updates, "resumed_from": resume, "total_updates": done + updates,
                "mean_score": logs[-1]["objective/scores"] if logs else None,
                "kl": logs[-1].get("objective/kl") if logs else None,
                "eos_share": logs[-1].get("val/num_eos_tokens", 0) / config.batch_size if logs else None, **saved}

    return execute_run(settings, config, db, rows, body, info, generated=config.response_length)
