"""The `sep` command line: a small typer app over the stages, one file per command group.

Every command reads one `Settings` (env vars SEP_*) and lets its flags override it, calls the API
(`sep.api`) and prints; bad input prints one sentence and exits with code 2, and the database is
left as it was. `common` holds the app and what the groups share; each group registers its
commands on import, in the order `sep --help` lists them.
"""

from sep.cli import (  # noqa: F401,E402,I001
    batch,
    data,
    decide,
    dedup,
    evaluate,
    experiment,
    ledger,
    models,
    train,
)
from sep.cli.common import Bars, app, stage_progress
from sep.cli.experiment import render_experiment

__all__ = ["Bars", "app", "main", "render_experiment", "stage_progress"]


def main() -> None:  # pragma: no cover - console entry point
    app()
