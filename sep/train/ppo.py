"""`sep train ppo`: PPO (trl.experimental.ppo, the last TRL line that has it) on one base in memory.

TRL's PPO takes four models: policy, reference, value and reward. On the 1.5B default model, three
fp32 copies (23-31 GiB) did not fit a 24 GB laptop (issue 34). Here one base serves them all: the
policy is the base + LoRA; the reference is the same base with the adapter off (TRL's own PEFT path);
the value is a linear head on the policy's decoder (`SharedValueHead`, no second trunk); the reward is
RLMF's, from the decoded answer (`TextReward`: the market, a reward run, or both).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlite_utils
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from torch import nn
from trl.experimental.ppo import PPOConfig, PPOTrainer

from sep.errors import BadInput
from sep.settings import Settings
from sep.train.base import TrainingBase, launch_rank, load_policy, lora, turn_tokenizer
from sep.train.config import PPORunConfig
from sep.train.data import day_rows, market_rows, training_rows
from sep.train.rollouts import PPOGeneration, llama_rollouts, ppo_rollouts, rollout_counts
from sep.train.run import Run, execute_run, last_checkpoint, precision, save_adapter, steady_memory
from sep.train.scorers import MarketFeedback

VALUE_HEAD = "value_head.pt"


class SharedValueHead(nn.Module):
    """PPO's value model as TRL reads one (`base_model_prefix` names the trunk, `score` maps its last
    hidden states to values), with the policy's own decoder as the trunk: only the head is new, so
    the base is held once. The trunk is not a submodule, so its weights are not counted twice."""

    base_model_prefix = "trunk"

    def __init__(self, policy: PeftModel) -> None:
        super().__init__()
        self.score = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.score.weight)  # values start at 0 and are learned from the returns
        nn.init.zeros_(self.score.bias)
        self.__dict__["policy"] = policy

    @property
    def trunk(self) -> nn.Module:
        return self.__dict__["policy"].get_base_model().model  # the decoder, with the policy's LoRA in it


class TextReward(nn.Module):
    """A reward TRL's PPO reads like a reward model (`get_reward`: trunk, then `score` at the answer's
    last token), computed from the decoded answer by `MarketFeedback`: no model forward at all for the
    market reward, and the reward run's own scorer for `model`/`both`. Each prompt is recognised by
    its token ids, which carry the day's return and chat."""

    base_model_prefix = "trunk"

    def __init__(self, tok: Any, feedback: MarketFeedback, prompts: list[dict]) -> None:
        super().__init__()
        self.tok, self.feedback = tok, feedback
        self.known = {tuple(p["input_ids"]): p for p in prompts}
        self.lengths = sorted({len(ids) for ids in self.known}, reverse=True)
        self.score = nn.Identity()

    def prompt_of(self, ids: list[int]) -> tuple[dict, list[int]]:
        for n in self.lengths:
            if tuple(ids[:n]) in self.known:
                return self.known[tuple(ids[:n])], ids[n:]
        raise BadInput("PPO scored a rollout whose prompt it was not given.")  # a TRL change would land here

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        rows = [self.prompt_of(ids[mask].tolist()) for ids, mask in zip(input_ids, attention_mask.bool())]
        texts = [self.tok.decode(response, skip_special_tokens=True) for _, response in rows]
        rets = [p.get("ret", 0.0) for p, _ in rows]
        rewards = torch.tensor(self.feedback(texts, [p["chat"] for p, _ in rows], rets,
                                             [p.get("date") or "" for p, _ in rows]), dtype=torch.float32)
        return SimpleNamespace(hidden_states=[rewards.view(-1, 1, 1).expand(-1, input_ids.shape[1], 1)])


def train_ppo(settings: Settings, config: PPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """PPO on the decision days' prompts: policy = base (SFT merged, when given) + LoRA, reference = the
    adapter off, value = a head on the policy's decoder, reward = RLMF's. One step = one PPO update."""
    rows, info = training_rows(db, config, day_rows(db, pairs, config.model), balanced=False)  # the reward needs no labels
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")
    rows, market_scale = market_rows(db, rows, config.reward_kind)

    def body(run: Run, base: TrainingBase) -> dict:
        tok = turn_tokenizer(base)  # generation stops, and EOS is checked, at the turn end
        tok.padding_side = "left"
        policy, done, resume = ppo_policy(base, config, run.out)
        value = SharedValueHead(policy)
        if resume and (Path(resume) / VALUE_HEAD).exists():
            value.load_state_dict(torch.load(Path(resume) / VALUE_HEAD))
        remaining = max(config.max_steps - done, 0)
        prompts = [{"input_ids": tok(base.fmt.prompt(r["prompt"]), truncation=True, max_length=config.max_length)["input_ids"],
                    "chat": r["prompt"], "date": r.get("date"), **({"ret": float(r["ret"])} if "ret" in r else {})}
                   for r in rows]
        reward = TextReward(tok, MarketFeedback.of(config, settings, base.fmt, market_scale), prompts)
        trainer = PPOTrainer(args=ppo_args(config, run.out, remaining, tok), processing_class=tok, model=policy,
                             ref_model=None, reward_model=reward, value_model=value,
                             train_dataset=Dataset.from_list([{"input_ids": p["input_ids"]} for p in prompts]))
        wrapper = shared_wrapper(trainer)
        one_pass(wrapper)
        steady_memory(trainer)
        rollouts, where = llama_rollouts(settings, config, base, tok, rows, run.out / "rollouts",
                                         config.response_length, config.rollout_temperature)
        generation = PPOGeneration(rollouts, trainer, {tuple(p["input_ids"]): base.fmt.prompt(r["prompt"]) for p, r in
                                                       zip(prompts, rows)}, config.rollout_temperature) if rollouts else None
        if remaining:
            with torch.random.fork_rng(), ppo_rollouts(generation):
                torch.manual_seed(config.seed)
                trainer.train()
        updates = trainer.state.global_step if remaining else 0
        saved = save_adapter(run, wrapper.policy, tok, base)
        if run.main:
            ckpt = run.out / "checkpoints" / f"checkpoint-{done + updates}"
            wrapper.policy.save_pretrained(ckpt)  # what a rerun resumes from, with the value head
            torch.save(value.state_dict(), ckpt / VALUE_HEAD)
        logs = [h for h in trainer.state.log_history if "objective/scores" in h]
        return {"updates": updates, "resumed_from": resume, "total_updates": done + updates,
                "mean_score": logs[-1]["objective/scores"] if logs else None,
                "kl": logs[-1].get("objective/kl") if logs else None,
                "eos_share": logs[-1].get("val/num_eos_tokens", 0) / config.batch_size if logs else None,
                "market_scale": market_scale, "rollouts": where, **rollout_counts(rollouts), **saved}

    return execute_run(settings, config, db, rows, body, info, generated=config.response_length)


def shared_wrapper(trainer: PPOTrainer) -> nn.Module:
    """TRL's policy-and-value wrapper, unwrapped. In a data-parallel launch (torchrun, `accelerate
    launch`) the trainer holds it inside DistributedDataParallel, yet TRL's PPO reads `model.policy`
    and `model.config` on what it holds (the reference pass, the adapter switch, the checkpoint's
    model card: huggingface/trl#2375), so the parallel wrapper is given both, outside its modules.
    Its other ranks save through a transformers path that reads a flag TRL's PPO never sets."""
    inner = trainer.accelerator.unwrap_model(trainer.model)
    if inner is not trainer.model:
        trainer.model.__dict__.update(policy=inner.policy, config=inner.config)
    trainer.__dict__.setdefault("is_distributed_loading_by_transformers", False)
    return inner


def one_pass(wrapper: nn.Module) -> None:
    """TRL's policy-and-value wrapper runs the value trunk, then the policy, on the same batch: with a
    shared trunk that is the same forward twice, and twice the activations kept for the backward pass.
    Here the value head reads the policy pass's own last hidden states (TRL asks for them)."""
    def forward(**kwargs: Any) -> tuple[Any, torch.Tensor]:
        out = wrapper.policy(**kwargs)
        return out, wrapper.value_model.score(out.hidden_states[-1])

    wrapper.forward = forward


def ppo_policy(base: TrainingBase, config: PPORunConfig, out: Path) -> tuple[PeftModel, int, str | None]:
    """The policy with its LoRA (a fresh one, or the last checkpoint's: TRL's PPO has no trainer resume),
    the updates already done, and the checkpoint resumed from."""
    policy = load_policy(base, config.sft)
    resume = last_checkpoint(out)
    if resume and (Path(resume) / "adapter_config.json").exists():
        return PeftModel.from_pretrained(policy, resume, is_trainable=True), int(Path(resume).name.split("-")[-1]), resume
    return get_peft_model(policy, lora(config, "CAUSAL_LM", policy)), 0, resume


def ppo_args(config: PPORunConfig, out: Path, remaining: int, tok: Any) -> PPOConfig:
    """One step is one update of every process's batch: TRL counts episodes over all processes."""
    episodes = max(remaining, 1) * config.batch_size * launch_rank()[1]
    return PPOConfig(output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
                     num_mini_batches=1, total_episodes=episodes,
                     local_rollout_forward_batch_size=config.batch_size, num_ppo_epochs=1,
                     response_length=config.response_length, temperature=config.rollout_temperature,
                     stop_token_id=tok.eos_token_id, kl_coef=config.kl_coef,
                     missing_eos_penalty=config.missing_eos_penalty, learning_rate=config.learning_rate,
                     num_sample_generations=0, save_steps=config.save_steps, report_to=[], seed=config.seed,
                     logging_steps=1, **precision(config.precision))
