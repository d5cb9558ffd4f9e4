"""`sep train reward`: a Bradley–Terry reward model on wrong→right pairs, held out by time: TRL's
RewardTrainer (a sequence-classification head with LoRA), or an embedding head fitted in seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils
import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from sep.errors import BadInput
from sep.settings import Settings
from sep.train.base import TrainingBase, lora
from sep.train.config import RewardRunConfig
from sep.train.data import majority_pair_accuracy, pair_rows, time_split, training_rows
from sep.train.run import Run, execute_run, save_adapter, train_with_resume, trainer_args
from sep.train.scorers import (HEAD_FILE, RewardModel, embedding_reward, pair_metrics, reward_model_and_tokenizer,
                               reward_text)


def train_reward(settings: Settings, config: RewardRunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """Bradley–Terry reward model (TRL RewardTrainer, sequence-classification head, LoRA).

    Held out: the last `eval_fraction` of the pairs in time (file order when rows carry no date),
    never a shuffle, so the score says how it does on days after the ones it learned from. Beside
    `pair_accuracy` stands `majority_accuracy`: how often "prefer the answer with the training
    majority's label" would be right on the same pairs.
    """
    rows, info = training_rows(db, config, pair_rows(db, pairs, config.model))
    if len(rows) < 2:
        raise BadInput(f"A reward model needs at least 2 pairs (one held out); found {len(rows)}. "
                       "Run `sep reflect` over more days, or pass --pairs FILE.jsonl.")
    train, held_out = time_split(rows, config.eval_fraction)
    if config.head == "embedding":
        return train_reward_head(settings, config, db, rows, train, held_out, info)

    def body(run: Run, base: TrainingBase) -> dict:

        model, tok = reward_model_and_tokenizer(base)
        # TRL drops pairs longer than max_length without a word: count them, and refuse when none is left
        fits = [r for r in train if max(len(tok(reward_text(base.fmt, r["prompt"], r[k])).input_ids)
                                        for k in ("chosen", "rejected")) <= config.max_length]
        if not fits:
            raise BadInput(f"All {len(train)} training pairs are longer than --max-length {config.max_length} tokens; "
                           "raise --max-length or shorten the window.")
        data = [{"prompt": base.fmt.prompt(r["prompt"]), "chosen": base.fmt.response(r["chosen"]),
                 "rejected": base.fmt.response(r["rejected"])} for r in train]
        trainer = RewardTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_list(data),
                                peft_config=lora(config, "SEQ_CLS", model),
                                args=trainer_args(config, RewardConfig, max_length=config.max_length,
                                                   eos_token=base.fmt.turn_end))
        metrics = train_with_resume(run, trainer)
        save_adapter(run, trainer.model, tok, base)
        trainer.model.eval()
        return {**metrics, "train_pairs": len(train), "too_long_dropped": len(train) - len(fits),
                "eval_first_day": held_out[0].get("date"),
                **pair_metrics(RewardModel(trainer.model, tok, base.fmt, base.name), held_out), "majority_accuracy": majority_pair_accuracy(train, held_out)}

    return execute_run(settings, config, db, rows, body, info)


def fit_bradley_terry(diffs: Any, l2: float) -> Any:
    """w minimising mean log(1 + exp(-w·(e_chosen - e_rejected))) + l2/2 |w|²: a Bradley–Terry
    preference on embeddings (no bias: only differences are seen). Solved with L-BFGS in torch."""

    x = torch.tensor(diffs, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> Any:
        opt.zero_grad()
        value = torch.nn.functional.softplus(-(x @ w)).mean() + l2 / 2 * (w @ w)
        value.backward()
        return value

    opt.step(loss)
    return w.detach().numpy()


def train_reward_head(settings: Settings, config: RewardRunConfig, db: sqlite_utils.Database | None, rows: list[dict],
                      train: list[dict], held_out: list[dict], info: dict) -> dict:
    """The laptop reward model: embed (prompt, chosen) and (prompt, rejected) once with the base's
    GGUF, fit a Bradley–Terry head on the differences, and score the held-out (last) pairs."""


    run = Run(db, config, rows, info).start()
    try:
        rm = embedding_reward(settings, config.base_model, None, config.threads)
        started = time.perf_counter()

        def embed(pairs: list[dict]) -> tuple[Any, Any]:
            vectors = np.array(rm.encoder([reward_text(rm.fmt, r["prompt"], r[k]) for r in pairs
                                           for k in ("chosen", "rejected")]))
            return vectors[0::2], vectors[1::2]

        train_chosen, train_rejected = embed(train)
        seconds = (time.perf_counter() - started) / (2 * len(train))
        rm.weights = fit_bradley_terry(train_chosen - train_rejected, config.l2)
        if run.main:
            (run.out / HEAD_FILE).write_text(json.dumps({"base_model": config.base_model, "pooling": "last",
                                                         "weights": rm.weights.tolist()}))
        held_chosen, held_rejected = embed(held_out)
        margins = (held_chosen - held_rejected) @ rm.weights
        train_margins = (train_chosen - train_rejected) @ rm.weights
        return run.finish({"head": "embedding", "train_pairs": len(train), "eval_first_day": held_out[0].get("date"),
                           "eval_pairs": len(held_out), "pair_accuracy": float(np.mean(margins > 0)),
                           "margin": float(np.mean(margins)), "train_accuracy": float(np.mean(train_margins > 0)),
                           "majority_accuracy": majority_pair_accuracy(train, held_out),
                           "seconds_per_candidate": seconds})
    except BaseException as exc:
        run.fail(exc)
        raise
