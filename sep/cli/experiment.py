"""sep experiment: walk-forward arm tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Column, Table

from sep import api
from sep.cli.common import (
    DbOpt,
    JsonOpt,
    PromptsOpt,
    app,
    bars,
    cell,
    ci_cell,
    console,
    model_errors,
    score_cells,
    settings,
    stage_progress,
    user_errors,
)

experiment_app = typer.Typer(help="Walk-forward experiments: SEP's arm table (base, memory, sft, best_of_n, ppo, grpo), "
                              "trained on one range and scored on the days after it.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("run")
def experiment_run_cmd(
    job_file: Annotated[Path, typer.Argument(help="A job file with an \\[experiment] table (see jobs/README.md).")],
    cutoff: Annotated[Optional[str], typer.Option("--cutoff", help="The model's training-data cutoff, YYYY-MM-DD: days "
                                                  "after it are scored apart \\[the catalog's for an embedded model; "
                                                  "`\\[llm] cutoff` in the job].")] = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reflect over the train range, train each arm on it, forecast every test day with each arm, score them.

    Training sees only days whose target day is on or before train_end; every scored day comes
    after it (and after the embargo). With folds, each fold is trained again on everything known
    before it. Baselines are scored on the same test days. A rerun of the same file resumes.

    Arms: base, memory (recalls lessons), masked (company and dates hidden: the memorization
    probe), sft, best_of_n, ppo, grpo. Each arm reports coverage, accuracy (unanswered = wrong),
    accuracy over answered days, MCC with its CI, and the accuracy this n could detect; days after
    the model's knowledge cutoff are scored apart.

    Examples:
      sep experiment run jobs/experiment.toml
      sep experiment run jobs/experiment.toml --cutoff 2024-01-31 --json
      sep experiment report 1 --out reports/experiment-1.html
    """

    with user_errors():
        cfg = settings(db=db, prompts=prompts, cutoff=cutoff)
        progress = bars(eta=True, keep=True)
        with model_errors(" Finished steps are stored; rerun to continue."), progress:
            result = api.run_experiment(job_file, settings=cfg, progress=stage_progress(progress)).report
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    render_experiment(result)


@experiment_app.command("show")
def experiment_show_cmd(
    experiment_id: Annotated[int, typer.Argument(help="The experiment id `sep experiment run` printed.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a finished experiment's arm table again."""
    with user_errors():
        result = api.show_experiment(api.open_memory(settings(db=db).db, must_exist=True), experiment_id).report
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    render_experiment(result)


@experiment_app.command("list")
def experiment_list_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Every experiment in the memory, newest first, with its status and base accuracy."""
    with user_errors():
        rows = api.list_experiments(api.open_memory(settings(db=db).db, must_exist=True))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        console.print("No experiment has run yet: sep experiment run JOB_FILE.")
        return
    table = Table("id", "name", "status", "model", "arms", "stocks", "test days", "base accuracy", "finished")
    for r in rows:
        status = r["status"] if r["status"] != "failed" else f"[red]failed[/]: {escape((r['error'] or '')[:60])}"
        table.add_row(str(r["id"]), escape(r["name"]), status, escape(str(r["model"] or "")), ", ".join(r["arms"] or []),
                      ", ".join(r["stocks"] or []), f"{r['test']} ({cell(r['test_days'])})", cell(r["base_accuracy"]),
                      r["finished_at"] or "–")
    console.print(table)


@experiment_app.command("report")
def experiment_report_cmd(
    experiment_id: Annotated[int, typer.Argument(help="The experiment id (`sep experiment list`).")],
    out: Annotated[Path, typer.Option("--out", help="HTML report to write; its JSON twin goes beside it (.json).")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a finished experiment as one HTML page with plots, and its JSON twin.

    The page works offline (SVG plots inline, no JavaScript): a forest plot of accuracy and MCC
    with 95% CIs for every arm and baseline, equity net of costs against buy-and-hold with the
    drawdown, a reliability diagram, coverage against accuracy, and per-fold, per-stock and
    cutoff tables.

    Example:
      sep experiment report 1 --out reports/experiment-1.html
    """
    with user_errors():
        written = api.experiment_report(api.open_memory(settings(db=db).db, must_exist=True), experiment_id, out)
    if as_json:
        print(json.dumps(written.as_json(), ensure_ascii=False, indent=2))
        return
    console.print(f"Wrote {written.html} and {written.json}.", highlight=False)


def render_experiment(r: dict) -> None:
    t, x = r["train"], r["test"]
    # Two tables: one of 18 columns cut every cell to nothing in an 80-column terminal.
    scores = Table("arm", "n", "coverage", "accuracy", "95% CI", "acc. answered", "MCC", "p vs coin", "p vs majority",
                   "min detectable",
                   title=f"experiment {r['id']} ({escape(r['name'])}, {escape(r['model'])}): trained on {t['start']}..{t['end']} "
                         f"({t['days']} days, {t['pairs']} pairs, {t['sft_rows']} SFT rows), tested on "
                         f"{x['start']}..{x['end']} ({x['days']} stock-days, {len(r['folds'])} fold(s))")
    more = Table("arm", "MCC 95% CI", "Brier", "ECE", "Brier cal.", "ECE cal.", "McNemar p vs base",
                 title="strength and probabilities (cal.: Platt-calibrated per fold)")
    earned = Table("arm", "market reward/day", Column("95% CI", no_wrap=True), "net return", "max drawdown",
                   title="what the forecasts earned: the market reward PPO and GRPO maximise (+|r| right, −|r| wrong "
                         "or unanswered) and a long/short backtest net of costs")
    for name, s in r["arms"].items():
        if s.get("skipped"):
            scores.add_row(name, "0", f"[dim]skipped: {escape(s['skipped'][:80])}[/]", *[""] * 7)
            continue
        cal = s.get("calibrated") or {}
        scores.add_row(name, *score_cells(s))
        more.add_row(name, ci_cell(s["mcc_ci95"]), cell(s["brier"]), cell(s.get("ece")), cell(cal.get("brier")),
                     cell(cal.get("ece")), cell(s.get("vs_base", {}).get("mcnemar_p")))
        earned.add_row(name, *reward_cells(s), f"{s['backtest']['net']:+.2%}", f"{s['backtest']['max_drawdown']:.2%}")
    for name, s in r["baselines"].items():
        scores.add_row(f"baseline: {name}", *score_cells(s))
        more.add_row(f"baseline: {name}", ci_cell(s["mcc_ci95"]), cell(s.get("brier")), *[""] * 4)
        earned.add_row(f"baseline: {name}", *reward_cells(s), "", "")
    console.print(scores)
    console.print(more)
    console.print(earned)
    render_against_base(r)
    render_experiment_notes(r)
    console.print("[dim]Every test day lies after the training range and its embargo; forecasts only (no retry told "
                  "the outcome). `sep experiment report ID --out FILE` draws the plots.[/]")


def reward_cells(s: dict) -> list[str]:
    """The mean market reward per day and its interval, in percent."""
    ci = s.get("market_reward_ci95")
    return ["–" if s.get("market_reward") is None else f"{s['market_reward']:+.2%}",
            f"{100 * ci[0]:+.2f}…{ci[1]:+.2%}" if ci else "–"]


def render_against_base(r: dict) -> None:
    """How each arm differs from base on the same days, and the smallest difference those days could show."""
    for arm, s in r["arms"].items():
        if (v := s.get("vs_base")) and v.get("n"):
            reach = (f"these days detect a gap of {v['min_detectable_gap']:.3f} or more (power 0.8)"
                     if v.get("min_detectable_gap") is not None else
                     "these days can't detect any gap their disagreements allow")
            console.print(f"{arm} − base on {v['n']} days: accuracy {v['gap']:+.3f} (95% CI {ci_cell(v['gap_ci95'])}), "
                          f"different answers on {v['discordant']:.0%} of days, McNemar p {cell(v['mcnemar_p'])}; "
                          f"{reach}", highlight=False)


def render_experiment_notes(r: dict) -> None:
    """What the tables can't hold: silent arms, the gate's flags and re-asks, lessons and their uptake,
    the knowledge cutoff, memorization and the folds."""
    silent = [name for name, s in r["arms"].items() if "skipped" not in s and s["answered"] == 0]
    if silent:  # the table is wide: say it where no column can cut it
        console.print(f"[red]no answers[/] from {', '.join(silent)}: every answer was withheld or unparsable.")
    for name, s in r["arms"].items():
        if s.get("skipped"):  # its table cell is cut in a narrow terminal
            console.print(f"{name} skipped: {escape(s['skipped'])}", highlight=False)
        if s.get("trained_on"):
            console.print(f"{name} learned from {escape(s['trained_on'])}", highlight=False)
    withheld = ["{}: {}".format(name, ", ".join(f"{k} {v}" for k, v in s["flags"].items()))
                for name, s in r["arms"].items() if s.get("flags")]
    if withheld:
        console.print("withheld by the gate (per flag): " + "; ".join(withheld), highlight=False)
    reasked = [f"{name} {s['reasked']}" + (" (the asks it replaced were flagged: {})".format(", ".join(
        f"{k} {v}" for k, v in s["reasked_flags"].items())) if s.get("reasked_flags") else "")
        for name, s in r["arms"].items() if s.get("reasked")]
    if reasked:
        console.print("forecasts the gate flagged and sep asked again, still without the outcome: " + ", ".join(reasked),
                      highlight=False)
    lessons, took = r.get("lessons"), r.get("uptake")
    if lessons and lessons["n"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(lessons["flags"].items(), key=lambda kv: -kv[1]))
        console.print(f"lessons on the training days: {lessons['passed']} of {lessons['n']} pass the gate "
                      f"({lessons['pass_rate']:.0%})" + (f"; flagged: {why}" if why else ""), highlight=False)
    if took:
        console.print(f"lesson uptake (memory vs base, {took['n']} days): {took['moved']} moved "
                      f"({took['rate']:.0%}: the label flipped on {took['flipped']}, or P(up) moved ≥ {took['shift']:.2f})",
                      highlight=False)
    c = r["cutoff"]
    if c["date"]:
        parts = [f"{name} {s['pre_cutoff']['n']} before / {s['post_cutoff']['n']} after"
                 + (f" (accuracy after {cell(s['post_cutoff']['accuracy'])})" if s["post_cutoff"]["n"] else "")
                 for name, s in r["arms"].items() if "pre_cutoff" in s]
        console.print(f"knowledge cutoff {c['date']} ({escape(c['source'])}): " + "; ".join(parts), highlight=False)
        if all(s["post_cutoff"]["n"] == 0 for s in r["arms"].values() if "post_cutoff" in s):
            console.print("[yellow]Every test day is before the model's knowledge cutoff: it may remember them; no "
                          "figure here is evidence of skill.[/]")
    else:
        console.print(f"[yellow]knowledge cutoff unknown[/] ({escape(c['source'])})", highlight=False)
    m = r.get("memorization")
    if m and m["n"]:
        console.print(f"memorization (base − masked accuracy, {m['n']} days): {m['gap']:+.3f}, 95% CI {ci_cell(m['gap_ci95'])}, "
                      f"McNemar p {cell(m['mcnemar_p'])}", highlight=False)
    if len(r["folds"]) > 1:
        console.print("per fold: " + "; ".join(
            f"{f['fold']} (≤ {f['train_end']}, {f['start']}..{f['end']}, {f['days']}): "
            + ", ".join(f"{a} {cell(v['accuracy'])}" for a, v in f["arms"].items()) for f in r["folds"]), highlight=False)
