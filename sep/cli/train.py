"""sep train: one command per trainer, its options built from its config dataclass."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from sep import api
from sep.cli.common import (
    DbOpt,
    JsonOpt,
    ThreadsOpt,
    app,
    console,
    setting,
    settings,
    user_errors,
)
from sep.errors import BadInput

train_app = typer.Typer(help="Train on what reflection taught: SFT, reward model, PPO, market-feedback GRPO (the train extra).",
                         no_args_is_help=True)
app.add_typer(train_app, name="train")

SeedOpt = setting("seed", help="Seed for data order, LoRA init and sampling.")


def _train(kind: str, fields: dict, data: Path | None, from_memory: bool, db: Path | None, threads: int | None,
           seed: int | None, as_json: bool) -> None:
    """Shared by the four trainers: settings, `sep.train_model`, its report; bad input exits 2."""
    with user_errors():
        cfg = settings(db=db, threads=threads, seed=seed)
        if data is not None and from_memory:
            raise BadInput("Give a file or --from-memory, not both.")
        trained = api.train_model(kind, data=data, settings=cfg, **fields)
    if not trained.main:  # one report per launch, however many processes trained
        return
    if as_json:
        print(json.dumps(trained.metrics, ensure_ascii=False, indent=2))
        return
    table = Table("metric", "value", title=f"sep train {kind} → {trained.out}")
    for k, v in trained.metrics.items():
        table.add_row(k, escape(f"{v:.4g}" if isinstance(v, float) else str(v)))
    console.print(table)


def _config_options(config_cls: type) -> list[inspect.Parameter]:
    """One option per config field that carries help text (`sep.train.config.option`): the dataclass is
    the single source of names, types, defaults, limits and help."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        kind = hints[f.name]
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        option = typer.Option(*decls, help=meta["help"].replace("[", "\\["), min=meta.get("min"), max=meta.get("max"),
                              show_default=f.default is not None)
        default = inspect.Parameter.empty if meta.get("required") else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, option]))
    return params


def _trainer_command(kind: str, config_cls: type, data_flag: str, data_help: str, examples: str) -> None:
    """Register `sep train KIND` with options derived from its config dataclass."""
    common = [
        inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Optional[Path], typer.Option(data_flag, help=data_help)]),
        inspect.Parameter("from_memory", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--from-memory", help="Learn from what `sep reflect` stored (the default without "
                               f"{data_flag}).")]),
        inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=SeedOpt),
        inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ThreadsOpt),
        inspect.Parameter("db", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DbOpt),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt),
    ]
    options = _config_options(config_cls)

    def command(**given: Any) -> None:
        fields = {p.name: given[p.name] for p in options}
        _train(kind, fields, given["data"], given["from_memory"], given["db"], given["threads"], given["seed"],
               given["as_json"])

    command.__signature__ = inspect.Signature(options + common)  # type: ignore[attr-defined]
    command.__doc__ = f"{(config_cls.__doc__ or '').strip()}\n\nExamples:\n{examples}"
    command.__name__ = f"train_{kind}_cmd"
    train_app.command(kind)(command)


def _register_trainers() -> None:
    from sep.train.config import (
        CONFIGS,  # pure data: the trainers' own imports wait until one runs
    )

    pairs = "TRL preference JSONL (prompt/chosen/rejected[, ret]) instead of memory."
    data = {"sft": ("--data", "TRL prompt/completion JSONL instead of memory."),
            "stance": ("--data", "A labelled file (CSV, xlsx or JSONL) of texts and positive/neutral/negative labels.")}
    examples = {
        "sft": "  sep train sft --from-memory --out runs/sft\n  sep train sft --data completions.jsonl --max-steps 100",
        "stance": "  sep train stance --data phrasebank_train.csv --text-column sentence,kor_sentence --per-label 130 "
                  "--max-steps 100 --out runs/stance\n  sep stance test.csv --text-column kor_sentence --label-column label "
                  "--policy runs/stance",
        "reward": "  sep train reward --from-memory --out runs/rm\n"
                  "  sep train reward --pairs pairs.jsonl --max-steps 200 --out runs/rm --json",
        "ppo": "  sep train ppo --reward-kind both --reward runs/rm --sft runs/sft --from-memory --out runs/ppo",
        "grpo": "  sep train grpo --from-memory --sft runs/sft --out runs/grpo   # on a CPU it samples through llama.cpp\n"
                "  sep train grpo --reward-kind both --reward runs/rm --pairs pairs.jsonl --out runs/grpo",
    }
    for kind, config_cls in CONFIGS.items():
        _trainer_command(kind, config_cls, *data.get(kind, ("--pairs", pairs)), examples[kind])


_register_trainers()
