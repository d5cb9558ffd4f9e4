"""`sep train stance`: SFT of the stance step on a labelled file (both languages, balanced per
label); the run keeps the prompt it learned on, which `sep stance --policy RUN` asks with."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import sqlite_utils

from sep.errors import BadInput
from sep.prompting import write_prompt
from sep.settings import Settings
from sep.stances import STANCES, detect_lang, read_table, stance_prompt, text_columns
from sep.train.base import TrainingBase
from sep.train.config import StanceRunConfig
from sep.train.run import Run, execute_run
from sep.train.sft import sft_body


def stance_rows(config: StanceRunConfig, data: Path, prompts_dir: Path | None = None) -> tuple[list[dict], dict]:
    """prompt/completion rows of a labelled file: the stance prompt of each text's language without its
    worked examples, and the label's answer word; `per_label` texts per label and language at most."""

    from sep.stances import stance_prompt

    table = read_table(data, text_columns(config.text_column), config.label_column)
    groups: dict[tuple[str, str], list[str]] = {}
    for text, label in zip(table.texts, table.labels or []):
        groups.setdefault((detect_lang(text), label), []).append(text)
    rows, counts = [], {}
    for (lang, label), texts in sorted(groups.items()):
        if config.per_label and len(texts) > config.per_label:
            texts = random.Random(config.seed).sample(texts, config.per_label)
        prompt = dataclasses.replace(stance_prompt(lang, prompts_dir), examples=())
        answer = prompt.labels[STANCES.index(label)]
        rows += [{"prompt": prompt.messages(text=t), "completion": answer, "lang": lang} for t in texts]
        counts[f"{lang}_{label}"] = len(texts)
    random.Random(config.seed).shuffle(rows)
    return rows, {"labels": counts}


def train_stance(settings: Settings, config: StanceRunConfig, db: sqlite_utils.Database | None, data: Path | None) -> dict:
    """LoRA SFT of the stance step on a labelled file; the run keeps the prompt it learned on."""
    if data is None:
        raise BadInput("sep train stance learns from a labelled file: pass --data FILE (CSV, xlsx or JSONL with "
                       "--text-column and --label-column).")

    rows, info = stance_rows(config, data, settings.prompts)

    def body(run: Run, base: TrainingBase) -> dict:

        if run.main:
            for lang in sorted({r["lang"] for r in rows}):  # what `sep stance --policy RUN` will ask
                write_prompt(dataclasses.replace(stance_prompt(lang, settings.prompts), examples=()),
                             run.out / "prompts" / lang / "stance.toml")
        return sft_body([{k: r[k] for k in ("prompt", "completion")} for r in rows], config)(run, base)

    return execute_run(settings, config, db, rows, body, info)
