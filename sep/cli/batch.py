"""sep batch: jobs over many stocks and days, live, offline (export, execute, ingest) and resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from sep import api
from sep.cli.common import (
    DbOpt,
    JsonOpt,
    ModelOpt,
    PromptsOpt,
    ThreadsOpt,
    app,
    bars,
    console,
    field_flag,
    model_errors,
    settings,
    stage_progress,
    user_errors,
)
from sep.jobs import Job

batch_app = typer.Typer(help="Batch explanation jobs from jobs/*.toml: many stocks and days, concurrently, resumable.",
                         no_args_is_help=True)
app.add_typer(batch_app, name="batch")
JobArg = Annotated[Path, typer.Argument(help="A job file, e.g. jobs/sample.toml (keys in jobs/README.md).")]


@batch_app.command("run")
def batch_run_cmd(
    job_file: JobArg,
    concurrency: field_flag(Job, "concurrency", (), None, "overrides the file's concurrency", {}) = None,
    restart: Annotated[bool, typer.Option("--restart", help="The job file changed (model, trials, window, prompts, ...): forget its finished days and redo them all.")] = False,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every (stock, as-of trading day) of a job: summaries first (each once), then decisions.

    At most `concurrency` requests are in flight against the server (the embedded model takes one
    at a time). Killed at any moment, the job resumes where it stopped when run again: the days it
    finished are skipped, and no row is duplicated or lost. A job owns its results: another job
    file on the same days with another model does its own work, and a changed file under the same
    name is refused until renamed or run with --restart.

    Examples:
      sep batch run jobs/sample.toml
      sep batch run jobs/sn2.toml --concurrency 32
    """

    with user_errors():
        progress = bars(eta=True, keep=True)
        with model_errors(" Finished days are stored; rerun to continue."), progress:
            report = api.run_batch(job_file, settings=settings(db=db, prompts=prompts), concurrency=concurrency, restart=restart,
                                   progress=stage_progress(progress))
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        console.print(f"[bold]{report.job}[/]: {report.total} stock-days, {report.skipped} already done, "
                      f"{report.done} done now, {report.failed} failed; {report.summaries} summary and "
                      f"{report.requests} LLM requests in {report.seconds:.1f} s at concurrency {report.concurrency}.",
                      highlight=False)
        for e in report.errors:
            console.print(f"  [red]failed[/] {e['stock']} {e['date']}: {escape(e['error'])}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@batch_app.command("status")
def batch_status_cmd(job_file: JobArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """How far a job got: {total, done, failed, pending}, and its offline stages, read from memory."""
    with user_errors():
        report = api.batch_status(api.open_memory(settings(db=db).db, must_exist=True), job_file)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    console.print(f"[bold]{report['job']}[/]: {report['done']}/{report['total']} done, {report['failed']} failed, "
                  f"{report['pending']} pending" + (" — done" if report["complete"] else ""), highlight=False)
    for stage, n in report["offline"].items():
        console.print(f"  {stage}: {n['exported']} exported, {n['answered']} answered, {n['failed']} failed, "
                      f"{n['waiting']} waiting for results", highlight=False)


ModelIdOpt = Annotated[Optional[str], typer.Option(
    "--model", help="The model id the runner serves (vLLM's --served-model-name); default: the job's \\[llm] model, "
    "else the embedded default.")]
EngineOpt = Annotated[Optional[str], typer.Option(
    "--engine", help="vllm: the label constrained by structured outputs (vllm run-batch, Ray Data LLM); openai: plain "
    "chat requests (OpenAI's Batch API). Default: the job's first export's, else vllm.")]


@batch_app.command("export")
def batch_export_cmd(
    job_file: JobArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the requests (JSONL).")],
    model: ModelIdOpt = None,
    engine: EngineOpt = None,
    again: Annotated[bool, typer.Option("--again", help="Export requests whose results never came back once more.")] = False,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the job's next stage of requests in the OpenAI Batch API format, to run anywhere.

    Stages follow each other: the summaries, then the forecasts (trial 0), then a lesson and a retry
    for each miss, then best-of-n samples if the job asks. Run the file, ingest the results, export
    again, until `sep batch status` says done. Each line's custom_id is JOB/STOCK/DAY/STAGE/TRIAL and
    its body is the exact chat request a live run sends (with the structured-output label and logprobs).

    Examples:
      sep batch export jobs/sample.toml --out requests.jsonl
      vllm run-batch -i requests.jsonl -o results.jsonl --model Qwen/Qwen2.5-Coder-1.5B-Instruct \
        --served-model-name qwen2.5-coder-1.5b
      sep batch ingest jobs/sample.toml results.jsonl
    """
    with user_errors():
        with bars(keep=True) as progress:
            advanced = api.export_batch(job_file, out, settings=settings(db=db, prompts=prompts), model=model,
                                        engine=engine, again=again, progress=stage_progress(progress))
    stages = advanced.stages()
    if as_json:
        print(json.dumps(advanced.as_json(out), indent=2))
    elif not advanced.pending:
        console.print(f"Nothing to export: all {advanced.total} stock-days of the job are done.", highlight=False)
    else:
        console.print(f"{len(advanced.pending)} requests ({', '.join(f'{n} {s}' for s, n in stages.items())}) "
                      f"written to {out}; {advanced.done}/{advanced.total} stock-days done.", highlight=False)


@batch_app.command("ingest")
def batch_ingest_cmd(
    job_file: JobArg,
    results: Annotated[Path, typer.Argument(help="A results file (JSONL) from vllm run-batch, OpenAI's Batch API, "
                                                 "Ray Data LLM or `sep batch execute`.")],
    model: ModelIdOpt = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check and store the results of an export, and store every decision they complete.

    Each answer goes through the quality gate and into memory exactly as in a live run. Lines of
    another job, unreadable (truncated) lines, unknown custom_ids and answers of another model are
    counted and never stored (exit 1); failed requests are exported again next time. Ingesting the
    same file twice adds nothing.
    """
    with user_errors():
        with bars(keep=True) as progress:
            report = api.ingest_batch(job_file, results, settings=settings(db=db, prompts=prompts), model=model,
                                      progress=stage_progress(progress))
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        refused = sum(report.refused.values())
        console.print(f"[bold]{report.job}[/]: {report.lines} lines, {report.stored} stored, {report.already} already "
                      f"stored, {report.failed} failed, {refused} refused; {report.missing} exported requests still "
                      f"without a result. {report.done}/{report.total} stock-days done" +
                      (f"; next: `sep batch export` ({report.next_requests} {report.next_stage} requests)."
                       if report.next_stage and not report.missing else "."), highlight=False)
        for reason, n in report.refused.items():
            console.print(f"  [red]refused[/] {n} × {reason}", highlight=False)
        for example in report.examples:
            console.print(f"    {escape(example)}", highlight=False)
    if report.refused:
        raise typer.Exit(1)


@batch_app.command("execute")
def batch_execute_cmd(
    requests: Annotated[Path, typer.Argument(help="A requests file from `sep batch export`.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the results (JSONL; lines already there are kept).")],
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a requests file with the embedded model, as `vllm run-batch` would on a GPU.

    The offline path without a server: sep batch export → sep batch execute → sep batch ingest.
    """
    with user_errors():
        with bars(keep=True) as progress, model_errors(" Answered lines are kept; rerun to continue."):
            report = api.execute_batch(requests, out, settings=settings(model=model, threads=threads),
                                       progress=stage_progress(progress))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        console.print(f"{report['answered']} answered, {report['failed']} failed, {report['already']} already in {out} "
                      f"(model {report['model']}).", highlight=False)
    if report["failed"]:
        raise typer.Exit(1)
