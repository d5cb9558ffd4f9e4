"""One training run: its folder (config, metrics, adapter, checkpoints), its `runs` row, resuming,
and `execute_run`, what every trainer shares (threads, the base, the memory check, a failed run recorded)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.adapters import LEGACY_BASE, run_config, write_gguf_adapter
from sep.errors import BadInput
from sep.memory import RunStore
from sep.settings import Settings
from sep.train.base import (TrainingBase, check_memory, cpu_only, launch_rank, mmap_large_blocks, release_memory,
                             same_base, torch_threads, turn_tokenizer)
from sep.train.config import RunConfig
from sep.train.data import data_hash
from sep.train.scorers import HEAD_FILE


@dataclass
class Run:
    """One training run: its folder and its `runs` row. Rerunning the same --out resumes it."""

    db: sqlite_utils.Database | None
    config: RunConfig
    rows: list[dict]
    data: dict | None = None  # {stocks, data_start, data_end, labels...}: what the run learned from
    id: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def main(self) -> bool:
        """The process that writes the run (the only one, unless a data-parallel launch started several)."""
        return launch_rank()[0] == 0

    def start(self) -> "Run":
        self.out.mkdir(parents=True, exist_ok=True)
        digest = data_hash(self.rows)
        old = self.out / "data.sha256"
        if old.exists() and old.read_text().strip() != digest and last_checkpoint(self.out):
            raise BadInput(f"{self.out} holds a run on other data; pick a new --out (or delete it to start over).")
        if not self.main:  # every process refuses what rank 0 refuses, so none waits for a partner that left
            return self
        old.write_text(digest + "\n")
        span = {k: (self.data or {}).get(k) for k in ("stocks", "data_start", "data_end")}
        recorded = {**self.config.as_json(), **span}
        (self.out / "config.json").write_text(json.dumps(recorded, indent=2))
        if self.db is not None:
            self.id = RunStore(self.db).start(self.config.kind, str(self.out.resolve()), recorded, digest, len(self.rows),
                                              span["stocks"], span["data_start"], span["data_end"], self.config.base_model)
        return self

    def finish(self, metrics: dict) -> dict:
        metrics = {"kind": self.config.kind, "examples": len(self.rows), **(self.data or {}), **metrics,
                   "processes": launch_rank()[1]}
        if not self.main:
            return metrics
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
        if self.db is not None and self.id is not None:
            RunStore(self.db).finish(self.id, metrics)
        return metrics

    def fail(self, exc: BaseException) -> None:
        if self.main and self.db is not None and self.id is not None:
            RunStore(self.db).fail(self.id, exc)


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """The CPU multiplies bf16 in hardware (AMX or AVX512-BF16, read from Linux's cpuinfo flags)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", flags) is not None


def precision(asked: str) -> dict:
    """TrainingArguments' precision for `--precision`. auto: TRL's own default (bf16) on a GPU; on a
    CPU, bf16 autocast where the CPU multiplies bf16 in hardware (one forward and backward pass of
    the default model over 4 x 600 tokens: 54 s in fp32, 22 s in bf16 on 2 AMX cores), else fp32: a CPU
    without bf16 units runs bf16 GEMMs through a reference path about 100x slower."""
    if not cpu_only():
        return {"use_cpu": False} if asked == "auto" else {"use_cpu": False, "bf16": asked == "bf16"}
    bf16 = asked == "bf16" or (asked == "auto" and native_bf16())
    return {"use_cpu": True, "bf16": bf16, "fp16": False}


def trainer_args(config: RunConfig, cls: type, **extra: Any) -> Any:
    if config.lora_layers:  # recomputing activations would also send gradients through the frozen blocks below
        extra.setdefault("gradient_checkpointing", False)
    return cls(output_dir=str(Path(config.out) / "checkpoints"), max_steps=config.max_steps,
               per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
               logging_steps=1, save_steps=config.save_steps, save_total_limit=2, report_to=[], seed=config.seed,
               dataloader_num_workers=0, **precision(config.precision), **extra)


def save_adapter(run: Run, model: Any, tok: Any, base: TrainingBase) -> dict:
    """The run's result in out/adapter: the PEFT LoRA weights and the tokenizer (with the chat
    template), which vLLM serves as they are, and for a causal LM the same adapter as a llama.cpp
    GGUF (`adapter.gguf`), which `--policy` runs embedded."""
    if not run.main:
        return {}
    folder = run.out / "adapter"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if run.config.kind == "reward":
        return {}
    try:
        return {"gguf_adapter": str(write_gguf_adapter(folder, base.folder))}
    except BadInput as exc:  # an architecture llama.cpp's adapter format isn't written for yet: vLLM still serves it
        return {"gguf_adapter": None, "gguf_note": str(exc)}


def steady_memory(trainer: Any) -> None:
    """On a CPU, keep a long run's memory from creeping: large blocks by mmap, and the heap a step freed
    handed back after it. Without this glibc kept what steps freed and later steps reused it badly: a
    bf16 stance run of the default model grew from 10.5 to 13.4 GB resident in 40 steps, and its
    300-step run peaked at 23.7 GB. With it, 100 steps peaked at 11.6 GB (the defaults: 15.1 GB after
    40), for about 14% more time a step (docs/training.md)."""
    from transformers import TrainerCallback

    class TrimHeap(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            release_memory()

    if cpu_only():
        mmap_large_blocks()
        trainer.add_callback(TrimHeap())


def train_with_resume(run: Run, trainer: Any) -> dict:
    steady_memory(trainer)
    resume = last_checkpoint(run.out)
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "resumed_from": resume, "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def longest_example(rows: list[dict], base: TrainingBase, tok: Any, generated: int = 0) -> int:
    """Tokens of the longest example (prompt + its longest answer, or + `generated` tokens for RL)."""
    lengths = []
    for r in rows:
        answer = max((str(r.get(k) or "") for k in ("completion", "chosen", "rejected")), key=len)
        text = base.fmt.prompt(r["prompt"]) + (base.fmt.response(answer) if answer else "")
        lengths.append(len(tok(text).input_ids) + generated)
    return max(lengths, default=0)


def finished_run(out: Path) -> bool:
    """A run that finished: its metrics, and what it trained (an adapter, or an embedding reward head,
    which has no adapter). An experiment reuses it instead of training again."""
    out = Path(out)
    return (out / "metrics.json").exists() and ((out / "adapter").is_dir() or (out / HEAD_FILE).exists())


def last_checkpoint(out: Path) -> str | None:
    ckpts = sorted((Path(out) / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def refuse_other_base(out: Path, base: str) -> None:
    """A run folder resumes only on the base it was started on."""
    before = run_config(Path(out)).get("base_model") or LEGACY_BASE
    if last_checkpoint(out) and before != base:
        raise BadInput(f"{out} holds a run on {before}, not on {base}; pick a new --out (or delete it to start over).")


def execute_run(settings: Settings, config: RunConfig, db: sqlite_utils.Database | None, rows: list[dict],
             body: Callable[[Run, TrainingBase], dict], data: dict | None = None, generated: int = 0) -> dict:
    """What every trainer shares: torch threads, the base model (and the same base for its --sft and
    --reward runs), a memory check before anything loads, and a run recorded even when it fails."""
    torch_threads(config.threads)
    name = TrainingBase.name_of(config.base_model)  # refusals that need no model first: preparing one can take minutes
    for flag in ("sft", "reward"):
        if getattr(config, flag, None):
            same_base(Path(getattr(config, flag)), name, f"--{flag}")
    refuse_other_base(Path(config.out), name)
    base = TrainingBase.resolve(settings, config.base_model)
    config.base_model = base.name
    tokens = min(longest_example(rows, base, turn_tokenizer(base), generated), config.max_length + generated)
    logit_tokens = generated if config.kind == "grpo" else tokens  # GRPO computes logits for the completion only
    reward = getattr(config, "reward", None)  # RLRunConfig allows one only with --reward-kind model or both
    model_head = bool(reward) and not (Path(reward) / HEAD_FILE).exists()  # an embedding head runs in llama.cpp
    need = check_memory(config.kind, base, min(config.batch_size, len(rows)), logit_tokens, extra_copies=int(model_head),
                        positions=tokens if config.kind == "grpo" else 0)
    run = Run(db, config, rows, {**(data or {}), "longest_tokens": tokens, "estimated_peak_gb": round(need / 1e9, 1)}).start()
    try:
        return run.finish(body(run, base))
    except BaseException as exc:
        run.fail(exc)
        raise
    finally:
        release_memory()  # the next run of an experiment's process needs it
