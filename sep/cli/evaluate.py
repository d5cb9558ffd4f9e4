"""sep eval and sep audit: scores and reports over stored forecasts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from sep import api
from sep.cli.common import (
    BaseUrlOpt,
    DbOpt,
    EndOpt,
    JsonOpt,
    ModelOpt,
    PromptsOpt,
    StartOpt,
    StockOpt,
    app,
    bars,
    cell,
    console,
    err_console,
    model_errors,
    score_cells,
    setting,
    settings,
    stage_progress,
    user_errors,
)

AnsweredByOpt = Annotated[Optional[str], typer.Option(
    "--answered-by", help="The model or policy whose forecasts to use (needed when several answered that range).")]
ScopeJob = Annotated[Optional[Path], typer.Option("--job", help="A job file: its stocks and range.")]


@app.command("eval")
def eval_cmd(
    stock: StockOpt = None,
    job: ScopeJob = None,
    start: StartOpt = None,
    end: EndOpt = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Forecasts to score: reflect (trial 0) or best-of-n \\[reflect when stored].")] = None,
    answered_by: AnsweredByOpt = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Backtest: stay flat below this confidence.")] = None,
    cost_bps: Annotated[Optional[float], typer.Option("--cost-bps", min=0.0, help="Backtest round-trip cost in bps \\[KRX 23: sell-side tax + commission; US 2: commission].")] = None,
    long_only: Annotated[bool, typer.Option("--long-only", help="Backtest: 하락 means flat, not short.")] = False,
    seed: setting("seed", help="Seed for the bootstrap and the random baseline.") = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write this HTML report with plots (forest, "
                                                 "equity and drawdown, reliability, coverage-accuracy) and its .json twin.")] = None,
    ledger: Annotated[bool, typer.Option("--ledger", help="Score only pre-registered ledger entries (sep ledger), by "
                                         "kind: after the model's cutoff, before it; replays apart.")] = False,
    cutoff: Annotated[Optional[str], typer.Option("--cutoff", help="With --ledger: the model's training-data cutoff "
                                                  "\\[the catalog's].")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score forecasts: what was answered with only what was known at the end of D.

    The headline is reflect's trial 0 (or best-of-n): accuracy, MCC, 95% CIs resampling dates,
    exact p-values against a coin and against the majority rate, Brier and ECE, a backtest before
    and after costs, and baselines on the same days (majority class of the 60 trading days before
    the range, previous-day momentum, a seeded coin). Unparsable answers count as wrong.

    Apart from the headline: **hindsight**, the share of days a retry got right after being told
    the outcome (training data, never a forecast), and **in-sample** days, answered by a run
    trained on them.

    Examples:
      sep eval --stock 005930 --start 2022-05-02 --end 2022-05-31
      sep eval --job jobs/sample.toml --threshold 0.6 --long-only --json
      sep eval --job jobs/sample.toml --html reports/eval.html
      sep eval --ledger
    """
    if ledger:
        return ledger_eval(db, seed, cutoff, as_json)
    with user_errors():
        cfg = settings(db=db, seed=seed)
        evaluation = api.evaluate_forecasts(api.open_memory(cfg.db, must_exist=True), stock=stock, job=job, start=start,
                                            end=end, method=method, answered_by=answered_by, threshold=threshold,
                                            cost_bps=cost_bps, long_only=long_only, settings=cfg)
        written = api.eval_report(evaluation, html) if html else None
    if written:
        err_console.print(f"Wrote {written.html} and {written.json}.", highlight=False)
    if as_json:
        return print(json.dumps(evaluation.report, ensure_ascii=False, indent=2))
    render_eval(evaluation.report)


def ledger_eval(db: Path | None, seed: int | None, cutoff: str | None, as_json: bool) -> None:
    """`sep eval --ledger`: the pre-registered entries scored by kind."""
    with user_errors():
        cfg = settings(db=db, seed=seed, cutoff=cutoff)
        report = api.ledger_evaluate(api.open_memory(cfg.db, must_exist=True), settings=cfg)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        render_ledger_eval(report)


def render_ledger_eval(report: dict) -> None:
    """One table per kind of entry: pre-registered after the cutoff, before it, replays."""
    for kind, r in report["kinds"].items():
        table = Table("forecast", "n", "coverage", "accuracy", "95% CI", "acc. answered", "MCC", "p vs coin",
                      "p vs majority", "min detectable", "Brier",
                      title=f"{r['what']}: {r['start']}..{r['end']}")
        table.add_row("[bold]ledger[/]", *score_cells(r), cell(r["brier"]))
        for name, b in r["baselines"].items():
            table.add_row(f"baseline: {name}", *score_cells(b), cell(b.get("brier")))
        console.print(table)
    cut = ", ".join(f"{m}: {c or 'unknown'}" for m, c in report["cutoffs"].items())
    console.print(f"cutoffs: {escape(cut)}; {report['waiting']} entr{'y' if report['waiting'] == 1 else 'ies'} "
                  "waiting for their target close. Only entries made before their target close existed are "
                  "pre-registered; a replay is scored apart and shows no skill either way.", highlight=False)


def render_eval(report: dict) -> None:
    f = report["forecast"]
    table = Table("forecast", "n", "coverage", "accuracy", "95% CI", "acc. answered", "MCC", "p vs coin",
                  "p vs majority", "min detectable", "Brier",
                  title=f"{', '.join(report['stocks'])} {report['start']}..{report['end']}: {f['method']} · {escape(f['model'])}")
    table.add_row("[bold]sep (headline)[/]", *score_cells(report), cell(report["brier"]))
    for name, s in report["forecasts"].items():
        if name == f"{f['method']} · {f['model']}":
            continue  # the headline itself
        table.add_row(escape(name), *score_cells(s), cell(s["brier"]))
    for name, s in report["baselines"].items():
        table.add_row(f"baseline: {name}", *score_cells(s), "–")
    console.print(table)
    c = report["confusion"]
    console.print(f"confusion (actual → predicted up/down/none): up {c['up']['up']}/{c['up']['down']}/{c['up']['none']}, "
                  f"down {c['down']['up']}/{c['down']['down']}/{c['down']['none']}; ECE {cell(report['ece'])}",
                  highlight=False)
    if report.get("flagged"):
        console.print("[red]quality gate[/]: " + ", ".join(f"{n} {f}" for f, n in report["flagged"].items()) +
                      " (those answers count as unparsable: none)", highlight=False)
    bt = report["backtest"]
    side = "long only" if bt["long_only"] else "long/short"
    console.print(f"backtest ({side}, {bt['cost_bps']} bps a round trip): gross {bt['gross']['cumulative_return']:+.2%}, "
                  f"net {bt['net']['cumulative_return']:+.2%} (Sharpe {cell(bt['net']['sharpe'])}, max drawdown "
                  f"{bt['net']['max_drawdown']:.2%}, hit rate {cell(bt['hit_rate'])}) against buy-and-hold "
                  f"{bt['buy_and_hold']['cumulative_return']:+.2%}", highlight=False)
    if report["scored_once"]:
        console.print(f"[dim]{report['scored_once']} non-trading day(s) shared a trading day's interval and were scored once.[/]")
    if report["in_sample"]["n"]:
        s = report["in_sample"]
        console.print(f"[yellow]in-sample, not in the headline[/]: {s['n']} day(s) answered by a run trained on them "
                      f"(accuracy {cell(s['accuracy'])}).", highlight=False)
    if "hindsight" in report:
        h = report["hindsight"]
        console.print(f"[dim]hindsight (not a forecast): after reflection the last retry was right on "
                      f"{cell(h['accuracy'])} of {h['n']} days. {h['note']}[/]", highlight=False)


@app.command("audit")
def audit_cmd(
    out: Annotated[Path, typer.Option("--out", help="HTML report to write; its JSON twin goes beside it (.json).")],
    stock: StockOpt = None,
    job: ScopeJob = None,
    start: StartOpt = None,
    end: EndOpt = None,
    answered_by: AnsweredByOpt = None,
    judge: Annotated[bool, typer.Option("--judge", help="Also have the configured LLM (--model, --base-url) score relevance, clarity, consistency (1-7).")] = False,
    faithfulness: Annotated[int, typer.Option("--faithfulness", min=0, metavar="N", help="Test N evidence-first forecasts: the model that answered them (--model, --base-url) answers again without the items it cited, and with only them; removing evidence that changes nothing marks the explanation decorative. 2 model calls per forecast, cached.")] = 0,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Audit every stored explanation (consistency, grounding with cited ids, no dates after D) into an HTML report.

    Examples:
      sep audit --stock 005930 --out report.html
      sep audit --job jobs/sample.toml --out reports/sample.html --judge --base-url http://gpu:8000/v1
      sep audit --stock 005930 --out report.html --faithfulness 10
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, prompts=prompts)
        memory = api.open_memory(cfg.db, must_exist=True)
        with model_errors(), bars(percent=True) as progress:
            if faithfulness:
                err_console.print(f"[dim]Faithfulness: up to {faithfulness} forecasts × 2 model calls (cached ones "
                                  "are not asked again).[/]")
            audited = api.audit_explanations(memory, out, stock=stock, job=job, start=start, end=end, judge=judge,
                                             faithfulness=faithfulness, answered_by=answered_by, settings=cfg,
                                             progress=stage_progress(progress))
    if as_json:
        print(json.dumps(audited.as_json(), ensure_ascii=False, indent=2))
        return
    render_audit(audited)



def render_audit(audited: Any) -> None:
    """The audit's counts, and the faithfulness test's when it ran."""
    html, twin, s = audited.html, audited.json, audited.data["summary"]
    console.print(f"Audited {s['explanations']} explanations: {s['inconsistent']} inconsistent, "
                  f"{s['with_unsupported_claims']} with unsupported claims, {s['mentions_future']} mention dates after D; "
                  f"{s['withheld_injections']} text(s) of their windows addressed the model and were withheld. "
                  f"Wrote {html} and {twin}.", highlight=False)
    faith = audited.data.get("faithfulness")
    if faith is not None:
        if faith["n"]:
            shift = f", mean |ΔP(up)| {faith['mean_shift']:.2f}" if faith["mean_shift"] is not None else ""
            console.print(f"Faithfulness: removing the cited evidence moved {faith['faithful']} of {faith['n']} "
                          f"forecasts ({faith['rate']:.0%}; the label flipped on {faith['label_moved']}{shift}); "
                          f"{faith['n'] - faith['faithful']} explanation(s) decorative. The evidence alone gave the "
                          f"same label on {faith['sufficient']} of {faith['n']}.", highlight=False)
        else:
            console.print(f"Faithfulness: nothing to test ({faith['no_evidence']} forecasts cite no evidence; "
                          f"{faith['other_model']} were answered by another model than {faith['asked_model']}).",
                          highlight=False)