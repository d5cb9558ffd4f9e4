"""The trainers' configs: one dataclass beside each trainer (TRL's *Config style).

Each field that carries help text (`option`) is also a `sep train` option, with its default,
limits and help, so the CLI builds the options from here. This module is pure data (no torch,
no langchain), so `sep --help` does not pay for the trainers' imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sep.errors import BadInput, ordered
from sep.models import DEFAULT_MODEL
from sep.settings import MAX_TOKENS, default

EXPLAIN_TOKENS = MAX_TOKENS["explain"]
PRECISIONS = ("auto", "fp32", "bf16")


def option(default: Any, help: str, **cli: Any) -> Any:
    """A config field that is also a `sep train` option: its help text, and optionally `flag`
    (the option's name), `min`/`max` and `required`. The CLI builds each trainer's options from
    these fields (TRL's *Config style), so the help shows the real per-trainer defaults."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class RunConfig:
    """What every run shares. Stored as config.json and in `runs.config`."""

    base_model: str = option(DEFAULT_MODEL, "The model to train (TRL's model_name_or_path): a catalog name, "
                             "de-quantized once from its GGUF, or a folder holding a transformers model with a chat "
                             "template. The default is the model that explains.")
    out: Path | None = option(None, "Run folder (config, metrics, adapter, checkpoints); rerun the same one to "
                              "resume [default: runs/<trainer>].")
    max_steps: int = option(20, "Optimizer steps (PPO: updates).", min=1)
    learning_rate: float = option(2e-4, "Learning rate.", min=0.0)
    batch_size: int = option(2, "Examples per step.", min=1)
    lora_r: int = option(8, "LoRA rank.", min=1)
    lora_alpha: int = 16
    lora_targets: str = option("attention", "Layers LoRA adapts, read off the architecture: attention (the linear "
                               "layers of its attention blocks; through llama.cpp it decodes at 0.88x the base model "
                               "here) or all-linear (every linear layer: more capacity, 0.78x).")
    lora_layers: int = option(0, "Adapt only the last N transformer blocks (0: every block). The backward pass "
                              "stops at the lowest adapted block, so on a CPU the last 8 of Qwen2.5-1.5B's 28 train "
                              "about twice as fast as all of them.", min=0)
    precision: str = option("auto", "Arithmetic of the forward and backward passes: auto (bf16 mixed precision on a GPU, "
                            "and on a CPU that multiplies bf16 in hardware (AMX or AVX512-BF16): an SFT step 2x and "
                            "GRPO's learner passes about 2x faster than fp32 on 2 AMX cores, a PPO update no faster; "
                            "fp32 on other CPUs, where bf16 is about 100x slower), fp32 or bf16.")
    max_length: int = 2048          # tokens of prompt + answer; the chat prompts with a worked turn run ~1-1.5k
    save_steps: int = 10
    seed: int = default("seed")
    threads: int = default("threads")
    start: str | None = option(None, "First decision day to learn from.")
    end: str | None = option(None, "Last day whose outcome training may see: only days whose target day is on or "
                             "before it are used. Scores on or before it are in-sample.")
    balance: bool = option(True, "Downsample the majority label so 'always 상승' can't pass for skill.")
    model: str | None = None    # memory rows made by this model only (an experiment's base model); None: all
    kind: str = ""

    def __post_init__(self) -> None:
        if self.out is None:
            self.out = Path("runs") / self.kind
        if self.lora_targets not in ("attention", "all-linear"):
            raise BadInput(f"--lora-targets must be attention or all-linear, not {self.lora_targets!r}.")
        if self.precision not in PRECISIONS:
            raise BadInput(f"--precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, not {self.precision!r}.")
        ordered(self.start, self.end)

    def as_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class SFTRunConfig(RunConfig):
    """Supervised fine-tuning (LoRA) on answers the market proved right."""

    kind: str = "sft"


@dataclass
class StanceRunConfig(RunConfig):
    """LoRA SFT of the stance step: each text's label word (positive, neutral, negative) after the stance
    prompt without its worked examples. The run keeps that prompt (RUN/prompts), so `sep stance
    --policy RUN` asks exactly what it learned."""

    kind: str = "stance"
    text_column: str = option("text", "The column(s) of texts, comma-separated (a file with a Korean and an English "
                              "column trains both languages; each text's language is read off it: Hangul → ko).")
    label_column: str = option("label", "The column of labels: positive, neutral or negative.")
    per_label: int = option(0, "Texts drawn at random per label and language, so every label weighs the same "
                            "(0: every row).", min=0)
    lora_layers: int = option(8, "Adapt only the last N transformer blocks (0: every block). The backward pass "
                              "stops at the lowest adapted block, so on a CPU the last 8 of Qwen2.5-1.5B's 28 train "
                              "about twice as fast as all of them.", min=0)
    lora_targets: str = option("all-linear", "Layers LoRA adapts: attention or all-linear (a stance answer is one "
                               "token, so decode speed does not matter here).")
    batch_size: int = option(8, "Examples per step.", min=1)
    balance: bool = False  # labels are balanced by --per-label


@dataclass
class RewardRunConfig(RunConfig):
    """Bradley–Terry reward model (TRL RewardTrainer) on wrong→right pairs."""

    kind: str = "reward"
    head: str = option("model", "model: TRL's RewardTrainer, a sequence-classification head on the fp32 base (the GPU "
                       "path: PPO and GRPO load it as a second fp32 copy). embedding: a Bradley-Terry head on the embedded GGUF's pooled embedding "
                       "of (prompt, response), one prefill per scored answer, trained in seconds on a CPU.")
    eval_fraction: float = option(0.2, "Pairs held out for accuracy and margin (never trained on).", min=0.0, max=0.9)
    l2: float = 0.01  # the embedding head's ridge penalty (its weights are a 1,536-vector on a few dozen pairs)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in ("model", "embedding"):
            raise BadInput(f"--head must be model or embedding, not {self.head!r}.")


@dataclass
class RLRunConfig(RunConfig):
    """What PPO and GRPO share: the policy's start and the reward (RLMF: the market, a reward run, or both)."""

    reward_kind: str = option("market", "market (realized return), model (reward model) or both.", flag="--reward-kind")
    reward: Path | None = option(None, "A `sep train reward` run, for --reward-kind model or both.")
    model_weight: float = 0.5           # `both`: market/market scale + model_weight * model/model scale
    sft: Path | None = option(None, "A `sep train sft` run to start the policy from.")
    rollouts: str = option("auto", "Where completions are sampled: transformers (TRL's generate on the training "
                           "weights), llama.cpp (the base's GGUF with the --sft and current adapters, rewritten after "
                           "each update: about 3x faster sampling on 2 cores; an explain prompt keeps the inference "
                           "grammar, so its completions reach a label; the learner computes its own log-probs), or "
                           "auto: llama.cpp when training on the CPU with a base llama.cpp can run, else transformers.")
    rollout_slots: int = option(4, "Completions llama.cpp samples at once (--rollouts llama.cpp), each in its own slot "
                                "and with its own seed: on 2 cores 4 slots decoded 1.9x as many tokens a second as 1 on the "
                                "bare model, 1.3x under the --sft and policy adapters (bench/train_speed.py).",
                                min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollouts not in ("auto", "transformers", "llama.cpp"):
            raise BadInput(f"--rollouts must be auto, transformers or llama.cpp, not {self.rollouts!r}.")
        if self.reward_kind not in ("market", "model", "both"):
            raise BadInput(f"--reward-kind must be market, model or both, not {self.reward_kind!r}.")
        if self.reward_kind != "market" and not self.reward:
            raise BadInput(f"--reward-kind {self.reward_kind} needs --reward DIR (a `sep train reward` run).")
        if self.reward_kind == "market" and self.reward:
            raise BadInput("--reward is read only with --reward-kind model or both (the market needs no reward run).")


@dataclass
class PPORunConfig(RLRunConfig):
    """PPO (trl.experimental.ppo) on one base in memory: the policy is the base + LoRA, the reference the
    same base with the adapter off, the value a head on the policy's own decoder."""

    kind: str = "ppo"
    lora_layers: int = option(8, "Adapt only the last N transformer blocks (0: every block). On the 1.5B default model "
                              "one PPO update peaks at 12.6 GB with 8 and 18.4 GB with every block (2 cores, a "
                              "1,743-token prompt).", min=0)
    kl_coef: float = option(0.05, "KL penalty against the frozen reference policy.", min=0.0)
    missing_eos_penalty: float = option(1.0, "Reward lost by a response that never ends its turn.", min=0.0)
    response_length: int = option(EXPLAIN_TOKENS, "Tokens generated per rollout (an explanation's length at "
                                  "inference).", min=4)
    rollout_temperature: float = 0.7  # TRL's PPO sampling temperature (not best-of-n's `temperature`)
    rollouts: str = option("transformers", "Where rollouts are sampled: transformers (TRL's generate on the training "
                           "weights) or llama.cpp (the base's GGUF with the --sft and current adapters; the learner's "
                           "own forward pass gives PPO its old log-probs). Not yet auto: on 2 cores its speed against "
                           "transformers has not been measured on answers of the same length (docs/training.md).")
    learning_rate: float = option(1e-5, "Learning rate.", min=0.0)


@dataclass
class GRPORunConfig(RLRunConfig):
    """Market-feedback RL (RLMF) with TRL GRPOTrainer: +|r| for a right direction, -|r| for a wrong one."""

    kind: str = "grpo"
    lora_layers: int = option(8, "Adapt only the last N transformer blocks (0: every block). The loss's backward pass "
                              "stops at the lowest adapted block: one step of 4 completions on the 1.5B default model "
                              "took 110 s with 8 and 151 s with every block (2 cores, fp32, bench/train_speed.py).", min=0)
    signal_score: bool = option(False, "FinRLlama's variant: read a score in [-10, 10], not a label.")
    signal_threshold: float = option(3.0, "|score| below this takes no position.", min=0.0, max=10.0)
    num_generations: int = option(8, "Completions per prompt (the group). A group whose completions all take "
                                  "one label earns one reward and teaches nothing: on the sample's training days "
                                  "groups of 8 at temperature 1.3 disagreed on 5 of 8 prompts, groups of 2 rarely. "
                                  "Memory holds --batch-size of them at a time.", min=2)
    rollout_temperature: float = option(1.3, "Sampling temperature of the completions (the inference grammar still "
                                        "holds an explain answer's items and label).", min=0.1, max=2.0)
    max_completion_length: int = option(EXPLAIN_TOKENS, "Tokens generated per completion (an explanation's length "
                                        "at inference).", min=4)


# Each trainer's config by name (its `kind`): what `sep train NAME` and `sep.train_model(NAME)` take.
CONFIGS: dict[str, type[RunConfig]] = {c.kind: c for c in (SFTRunConfig, StanceRunConfig, RewardRunConfig,
                                                             PPORunConfig, GRPORunConfig)}
