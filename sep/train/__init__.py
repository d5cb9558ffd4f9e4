"""Learn from reflections: SFT, a reward model, a PPO policy and market-feedback GRPO (RLMF).

Fixes defects of SEP's reference code:
* pairs are oriented by the market: `chosen` is the response whose label matched the next close;
* the reward model is scored on the *last* days in time, never on its training pairs;
* every trainer learns on the model that explains (`--base-model`, default the default explaining
  model) and renders prompts with that model's own chat template, ending answers at its own
  turn-end token (`sep.llm.ChatFormat`), exactly as the policy will run;
* training is split in time: `start`/`end` keep decision days whose target day is on or before
  `end`, and each run records the range (`data_start`, `data_end`) so that anything later scored
  on or before `data_end` is reported as in-sample;
* labels are balanced by default, so "always 상승" can't pass for skill.

Every run writes a directory (config.json, metrics.json, data.sha256, adapter/, checkpoints/),
is recorded in the `runs` table, resumes from its last checkpoint when rerun with the same --out,
and shows the trainer's progress bar. All training uses LoRA (peft, every linear layer) on the
base's transformers folder (a catalog GGUF de-quantized once by `prepare_hf_model`, or a folder
you give); a causal-LM run also writes its adapter as a llama.cpp GGUF, so the embedded engine
runs it at the base model's speed. External TRL-format JSONL files are accepted everywhere.
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each public name lives (TRL's lazy `_import_structure`): `import sep.train` and its configs
# cost nothing, and a trainer's own dependencies (torch, transformers, TRL), imported at the top of
# its module, load only when that trainer runs.
_HOMES = {
    "config": ["CONFIGS", "EXPLAIN_TOKENS", "GRPORunConfig", "PPORunConfig", "RLRunConfig", "RewardRunConfig",
               "RunConfig", "SFTRunConfig", "StanceRunConfig"],
    "rewards": ["SIGNAL_INSTRUCTION", "market_reward", "mixed_reward", "parse_signal", "rlmf_rewards",
                "signal_reward", "with_signal_instruction"],
    "data": ["balance", "data_hash", "day_rows", "label_of_row", "majority_pair_accuracy", "pair_rows", "read_jsonl",
             "market_rows", "select_days", "sft_rows", "time_split", "training_rows", "with_returns"],
    "base": ["TrainingBase", "ACTIVATION_FLOATS", "LOGIT_COPIES", "MODEL_COPIES", "available_memory", "check_memory",
             "estimated_peak", "load_policy", "launch_rank", "lora", "lora_targets", "same_base", "turn_tokenizer", "weight_bytes"],
    "run": ["Run", "execute_run", "finished_run", "last_checkpoint", "save_adapter"],
    "scorers": ["HEAD_FILE", "EmbeddingReward", "MarketFeedback", "RewardModel", "embedding_reward", "load_reward", "load_reward_model",
                "pair_metrics", "reward_scores", "reward_text"],
    "sft": ["sft_body", "train_sft"],
    "stance": ["stance_rows", "train_stance"],
    "reward": ["fit_bradley_terry", "train_reward", "train_reward_head"],
    "ppo": ["SharedValueHead", "TextReward", "train_ppo"],
    "rollouts": ["LlamaRollouts", "PPOGeneration", "answer_shapes", "llama_rollouts", "merged_adapters", "ppo_rollouts",
                 "rollout_counts", "rollout_sampler", "rollouts_where", "sampled_ids"],
    "grpo": ["train_grpo"],
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted([*_HOME_OF, "TRAINERS", "trainer"])


def trainer(kind: str) -> tuple[type, Any]:
    """A trainer by name (`sft`, `stance`, `reward`, `ppo`, `grpo`): its config dataclass (the
    `sep train NAME` options) and the function that runs it; only that trainer's module loads."""
    from sep.train.config import CONFIGS

    return CONFIGS[kind], getattr(importlib.import_module(f"sep.train.{kind}"), f"train_{kind}")


def __getattr__(name: str) -> Any:
    if name == "TRAINERS":  # every trainer by name (imports all five)
        from sep.train.config import CONFIGS

        return {kind: trainer(kind) for kind in CONFIGS}
    if name in _HOME_OF:
        return getattr(importlib.import_module(f"sep.train.{_HOME_OF[name]}"), name)
    raise AttributeError(f"module 'sep.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
