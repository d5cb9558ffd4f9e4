"""The base model a run learns on (a catalog GGUF de-quantized once, or a folder), LoRA on it,
its turn-end tokenizer, and the memory check made before anything loads."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sep.adapters import read_adapter, run_base
from sep.backends.policy import base_model_folder, chat_format
from sep.errors import BadInput
from sep.llm import ChatFormat
from sep.models import CATALOG
from sep.settings import Settings
from sep.train.config import RunConfig


def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@dataclass(frozen=True)
class TrainingBase:
    """The model a run learns on: the name it was given (catalog name or folder), its transformers
    folder, and its chat format (template, turn end) read from its tokenizer."""

    name: str
    folder: Path
    fmt: ChatFormat

    @staticmethod
    def name_of(base_model: str | Path) -> str:
        """What a run records as its base, known without preparing it: a catalog name or a folder's path."""
        return str(base_model) if str(base_model) in CATALOG else str(Path(base_model).resolve())

    @classmethod
    def resolve(cls, settings: Settings, base_model: str | Path) -> "TrainingBase":
        folder = base_model_folder(settings.cache_dir, base_model)
        return cls(cls.name_of(base_model), folder, chat_format(folder))

    @classmethod
    def of_run(cls, settings: Settings, run: Path) -> "TrainingBase":
        """The base a run was trained on (its config.json); runs from before sep recorded one were Gemma-270M."""
        return cls.resolve(settings, run_base(run))


def same_base(run: Path, base: str, what: str) -> None:
    """Refuse, in one sentence, a run (an --sft or --reward) that was trained on another base."""
    other = run_base(run)
    if other != base:
        raise BadInput(f"{what} {run} was trained on {other}, not on {base}; train it again with "
                       f"--base-model {base}.")


def lora_targets(model: Any, which: str) -> str | list[str]:
    """The layers LoRA adapts, read off the architecture: `all-linear` (peft's every linear layer
    but the output head), or `attention`: the linear layers inside the model's attention blocks
    (q/k/v/o on Qwen2 and Gemma), found by module class, not by a list of one model's names."""
    if which == "all-linear":
        return "all-linear"
    import torch

    names = {child.rsplit(".", 1)[-1] for parent_name, parent in model.named_modules()
             if type(parent).__name__.endswith("Attention")
             for child, module in parent.named_modules(prefix=parent_name) if isinstance(module, torch.nn.Linear)}
    if not names:
        raise BadInput(f"{type(model).__name__} has no attention block sep can find; use --lora-targets all-linear.")
    return sorted(names)


def lora(config: RunConfig, task_type: str, model: Any) -> Any:
    from peft import LoraConfig

    targets = lora_targets(model, config.lora_targets)
    blocks = getattr(model.config, "num_hidden_layers", None)
    last = {}
    if config.lora_layers and blocks:  # peft picks blocks by number only from a list of module names
        import torch

        if targets == "all-linear":
            head = model.get_output_embeddings()
            targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                              if isinstance(module, torch.nn.Linear) and module is not head})
        last = {"layers_to_transform": list(range(max(0, blocks - config.lora_layers), blocks))}
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, task_type=task_type,
                      target_modules=targets, **last)


def load_policy(base: TrainingBase, sft: Path | None) -> Any:
    """The causal LM to train on: the base, with an SFT adapter merged in when given."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.folder)
    if sft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, read_adapter(sft).folder).merge_and_unload()
    return model


def turn_tokenizer(base: TrainingBase) -> Any:
    """The base's tokenizer with its EOS set to the token that ends a model turn (`<|im_end|>` for
    ChatML, `<end_of_turn>` for Gemma).

    Reward training, PPO, GRPO and best-of-n all end a response there: the reward trainer appends
    no other EOS, PPO and GRPO stop generating there, PPO reads the reward there, and its
    missing-EOS penalty looks for that same token.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.folder)
    tok.eos_token = base.fmt.turn_end
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# Measured on 2 cores: SFT of Qwen2.5 1.5B (fp32 + LoRA, gradient checkpointing) on one 1,143-token
# example peaked at 9.8 GB: 6.2 GB of weights plus about 5 fp32 copies of the logits (tokens x
# vocab), which TRL keeps for the loss and its entropy and accuracy metrics. 6 leaves a margin.
LOGIT_COPIES = 6
# PPO holds one base: the reference is the adapter off and the value a head on the policy's decoder (sep.train.ppo).
# A model-head reward run adds a copy to PPO and GRPO (`extra_copies`, counted by run.execute_run).
MODEL_COPIES = {"sft": 1, "stance": 1, "reward": 1, "grpo": 1, "ppo": 1}


def weight_bytes(folder: Path) -> int:
    """fp32 bytes of a transformers folder's weights (its safetensors files)."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


# GRPO keeps the logits of the completions only, but runs its forward and backward passes over each prompt
# and completion: `sep train grpo --rollouts llama.cpp` on Qwen2.5 1.5B, 4 explain prompts (the longest 1,743
# tokens) x 160-token completions, peaked at 18.8 GB, 10.3 GB above the weights and the logits: about 8 fp32
# values per hidden unit, per layer, per position (the 4 x 1,903 padded positions). The estimate was 9.4 GB.
ACTIVATION_FLOATS = 8


def estimated_peak(kind: str, folder: Path, batch: int, tokens: int, extra_copies: int = 0, positions: int = 0) -> int:
    """Bytes a run is expected to peak at on the CPU (fp32), from the measured SFT and GRPO points above.
    `positions`: the prompt and completion tokens of one example when the trainer keeps fewer logits (GRPO)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    text = config.get("text_config", config)
    vocab = int(text.get("vocab_size", 0))
    logits = 0 if kind == "reward" else LOGIT_COPIES * batch * tokens * vocab * 4  # a reward head has one output
    width = int(text.get("hidden_size", 0)) * int(text.get("num_hidden_layers", 0))
    activations = ACTIVATION_FLOATS * 4 * width * batch * positions
    return (MODEL_COPIES[kind] + extra_copies) * weight_bytes(folder) + logits + activations


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (bytes); None where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def glibc(function: str, *args: int) -> None:
    """Call one of glibc's allocator functions; elsewhere (macOS, musl) do nothing."""
    import ctypes

    try:
        getattr(ctypes.CDLL("libc.so.6"), function)(*args)
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Give freed memory back to the system (after each CPU step, and when a run ends): objects in
    reference cycles (the trainer's models) are collected, and glibc returns freed heap pages. Without it an experiment that trains in one
    process saw 13.3 GiB free after its SFT run and refused GRPO (13.6 GiB) on a 24 GB machine."""
    import gc

    gc.collect()
    glibc("malloc_trim", 0)  # not glibc (macOS, musl): the collector's work is all there is


def mmap_large_blocks(threshold: int = 8 << 20) -> None:
    """Have glibc serve blocks of `threshold` bytes and more by mmap, returned whole when freed. Its
    default threshold rises with what is freed (up to 32 MB), so a step's large activations come from
    the heap, where other steps' blocks fit them badly. An environment's own MALLOC_MMAP_THRESHOLD_ wins."""
    import os

    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        glibc("mallopt", -3, threshold)  # M_MMAP_THRESHOLD


def check_memory(kind: str, base: TrainingBase, batch: int, tokens: int, extra_copies: int = 0,
                 positions: int = 0) -> int:
    """Refuse, before loading anything, a CPU run that would not fit in memory; return the estimate.
    `tokens`: the positions whose logits the trainer holds (the whole example, or GRPO's completion);
    `extra_copies`: models loaded beside the base (a model-head reward run); `positions`: GRPO's prompt
    and completion tokens, whose activations it holds."""
    need = estimated_peak(kind, base.folder, batch, tokens, extra_copies, positions)
    have = available_memory()
    if have is not None and need > have and cpu_only():
        gib = 1 << 30
        copies = MODEL_COPIES[kind] + extra_copies
        raise BadInput(f"sep train {kind} on {base.name} would need about {need / gib:.1f} GiB here (fp32 on the CPU: "
                       f"{copies} model cop{'y' if copies == 1 else 'ies'} and "
                       f"{batch} x {tokens}-token logits" + (f", activations of {batch} x {positions} positions"
                                                              if positions else "") +
                       f") and {have / gib:.1f} GiB is free: lower --batch-size or "
                       "--max-length, pick a smaller --base-model, or run it on a GPU (README, 'Training on a GPU').")
    return need


def launch_rank() -> tuple[int, int]:
    """(this process's rank, processes) under a data-parallel launch (`torchrun`, `accelerate launch`
    on several GPUs), else (0, 1). Every process trains its share of each batch; only rank 0 writes
    the run's folder, its `runs` row and its report, which would otherwise be written once per process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def over_processes(total: list[float], longest: list[float]) -> tuple[list[float], list[float]]:
    """Counts summed and durations maxed over a data-parallel launch's processes (each counted only
    its own share); the values as they are in a single process. Every process must call it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return total, longest
    import torch

    summed, maxed = torch.tensor(total, dtype=torch.float64), torch.tensor(longest, dtype=torch.float64)
    dist.all_reduce(summed)
    dist.all_reduce(maxed, op=dist.ReduceOp.MAX)
    return summed.tolist(), maxed.tolist()


def cpu_only() -> bool:
    """Train on the CPU only when torch sees no GPU (accelerate launch spreads GPU runs)."""
    import torch

    return not torch.cuda.is_available()
