"""`sep train sft`: TRL's SFTTrainer with a LoRA on prompt/completion rows (the loss on the completion)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlite_utils
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from sep.errors import BadInput
from sep.settings import Settings
from sep.train.base import TrainingBase, load_policy, lora, turn_tokenizer
from sep.train.config import RunConfig, SFTRunConfig
from sep.train.data import sft_rows, training_rows
from sep.train.run import Run, execute_run, save_adapter, train_with_resume, trainer_args


def train_sft(settings: Settings, config: SFTRunConfig, db: sqlite_utils.Database | None, data: Path | None) -> dict:
    """LoRA SFT on prompt/completion; the loss covers the completion only."""
    rows, info = training_rows(db, config, sft_rows(db, data, config.model))
    if not rows:
        raise BadInput("No SFT examples: memory holds no correct trial-0 answers in that range yet (run `sep reflect`), "
                       "or pass --data.")

    return execute_run(settings, config, db, rows, sft_body(rows, config), info)


def sft_body(rows: list[dict], config: RunConfig) -> Callable[[Run, TrainingBase], dict]:
    """TRL's SFTTrainer with a LoRA on prompt/completion rows (the loss on the completion only)."""
    def body(run: Run, base: TrainingBase) -> dict:

        tok = turn_tokenizer(base)
        dataset = Dataset.from_list([{"prompt": base.fmt.prompt(r["prompt"]), "completion": base.fmt.response(r["completion"])}
                                     for r in rows])
        model = load_policy(base, None)
        trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=dataset,
                             peft_config=lora(config, "CAUSAL_LM", model),
                             args=trainer_args(config, SFTConfig, max_length=config.max_length, completion_only_loss=True,
                                                eos_token=base.fmt.turn_end))
        metrics = train_with_resume(run, trainer)
        return {**metrics, **save_adapter(run, trainer.model, tok, base)}

    return body
