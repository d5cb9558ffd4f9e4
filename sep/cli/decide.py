"""Deciding: sep reflect, sep stance, sep predict, and sep demo (the sample, end to end)."""

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
    DateArg,
    DateOpt,
    DbOpt,
    EndOpt,
    ExplainFormatOpt,
    JsonOpt,
    ModelOpt,
    PolicyOpt,
    PromptsOpt,
    StartOpt,
    StockArg,
    SummarizerOpt,
    ThreadsOpt,
    TrialsOpt,
    WindowDaysOpt,
    app,
    bars,
    console,
    err_console,
    make_llm_with_bars,
    model_errors,
    print_reports,
    setting,
    settings,
    stage_progress,
    user_errors,
)
from sep.cli.data import render_window, render_withheld
from sep.cli.dedup import dedup_with_bars, render_dedup
from sep.errors import missing_extra
from sep.settings import EXAMPLES_PER_LABEL, Settings
from sep.shapes import quote
from sep.window import UI_WORDS, label_word, lang_of


@app.command("reflect")
def reflect_cmd(
    stock: StockArg,
    date: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    trials: TrialsOpt = None,
    window_days: WindowDaysOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every prompt it would send (texts included) and call no model.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Also list the texts withheld because they address the model (sep.guard).")] = False,
    summarizer: SummarizerOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    policy: PolicyOpt = None,
    threads: ThreadsOpt = None,
    prompts: PromptsOpt = None,
    explain_format: ExplainFormatOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarize the last T days of texts, explain 상승/하락, and when wrong reflect and retry.

    The answer is checked against the close of the next trading day after D. Each trial is stored
    in `predictions`, each reflection in `reflections` (recalled by later decisions), and each
    wrong→right flip in `pairs`. Summaries are cached, so a range reuses them.

    Examples:
      sep reflect --stock 005930 --date 2022-06-01
      sep reflect --stock 005930 --start 2022-05-23 --end 2022-05-31 --json
      sep reflect --stock 005930 --date 2022-06-01 --base-url http://gpu:8000/v1 --model google/gemma-3-1b-it
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, trials=trials,
                       prompts=prompts, explain_format=explain_format, window_days=window_days, summarizer=summarizer)
        memory = api.open_memory(cfg.db, must_exist=True)
        days = api.decision_days(memory, stock, date=date, start=start, end=end)
    run_reflect(memory, stock, days, cfg, dry_run=dry_run, as_json=as_json, verbose=verbose)


def run_reflect(memory: Any, stock: str, days: list[str], cfg: Settings, *, dry_run: bool = False,
                as_json: bool = False, verbose: bool = False) -> None:
    """`sep.reflect` over the days with a bar, each model call shown as a step, each day printed when done."""
    with model_errors():
        llm = None if dry_run else make_llm_with_bars(cfg)
    progress = bars("Reflecting", detail=True, disable=dry_run)
    task = progress.add_task("", total=len(days))

    def step(day: str, name: str, text: str) -> None:
        """Each model call shows as a step: a small model takes tens of seconds per call."""
        if dry_run:
            console.print(f"[bold cyan]── {name} prompt ──[/]\n{escape(text)}", highlight=False)
        elif not as_json and not err_console.is_terminal:
            err_console.print(f"[dim]{day}: {name} …[/]", highlight=False)
        else:
            progress.update(task, description=f"{day}: {name} (call {llm.calls + 1 if llm else 0})")

    def done(result: Any) -> None:
        if dry_run:
            render_withheld(result.window, verbose)
        elif not as_json:
            render_result(result, verbose)
        progress.advance(task)

    with progress, user_errors(), model_errors(" Finished days are stored; rerun to continue."):
        run = api.reflect(memory, stock, days=days, settings=cfg, llm=llm, dry_run=dry_run, on_step=step, on_day=done)
    if as_json and not dry_run:  # one shape: a list of days, one element for --date
        print(json.dumps(run.as_json(), ensure_ascii=False, indent=2))
    if llm is not None and not as_json:
        err_console.print(f"[dim]{run.calls} LLM calls, {run.prompt_tokens} prompt + {run.completion_tokens} "
                          f"completion tokens ({run.model})[/]")


def _flag_note(flags: list[str], consequence: str = "counted as unparsable") -> str:
    """How a failed quality check shows next to a generated text."""
    return f"  [bold red]⚑ {', '.join(flags)}[/] [red]({consequence})[/]" if flags else ""


def render_result(result: Any, verbose: bool = False) -> None:
    """Window, summaries, each trial with its cited evidence and reflection, and the outcome, in the stock's language."""
    w = result.window
    ui = UI_WORDS[lang_of(w.stock)]
    render_window(w, max_titles=3, verbose=verbose)
    for day, summary in result.summaries:
        console.print(f"[bold green]{ui['summary']} {day}[/]\n{escape(summary)}", highlight=False)
    as_written = [day for day, method, flags in result.summary_notes if method == "extractive" and not flags]
    if as_written:  # one line for all: on a window of news or tweets (SEP_SUMMARIZER=auto) it is every day
        days = "every day" if len(as_written) == len(result.summary_notes) else ", ".join(as_written)
        console.print(f"[dim]{ui['summary']}: {days} shows its top texts as written (no model).[/]")
    for day, method, flags in result.summary_notes:
        if flags:
            console.print(f"[dim]{ui['summary']} {day}: the model's points were flagged ({flags}); showing the "
                          f"extractive summary (the day's top titles) instead.[/]")
    if result.recalled:
        console.print(f"[bold magenta]{ui['recalled']}[/]")
        for r in result.recalled:
            console.print(f"  · {r}", highlight=False, markup=False)
    for t in result.trials:
        mark = "[green]✓ correct[/]" if t.correct else "[red]✗ wrong[/]"
        label = label_word(t.label, w.stock)
        conf = f"  confidence {t.confidence:.2f}" if t.confidence is not None else ""
        kind = "forecast" if t.trial == 0 else "retry, told the outcome: hindsight"
        console.print(f"[bold]trial {t.trial}[/] ({kind}): {label}{conf}  {mark}{_flag_note(t.flags)}")
        render_evidence(t.evidence)
        console.print(t.explanation or "(no explanation)", highlight=False, markup=False)
        if t.reflection:
            console.print(f"[bold yellow]reflection[/]{_flag_note(t.reflection_flags, 'never recalled')}: "
                          f"{escape(t.reflection)}", highlight=False)
    final = result.trials[-1] if result.trials else None
    if final:
        forecast = "right" if result.trials[0].correct else "wrong"
        retried = "" if len(result.trials) == 1 else \
            f"; after {len(result.trials) - 1} retr{'y' if len(result.trials) == 2 else 'ies'} " + \
            ("found the right side (hindsight)" if final.correct else "still wrong")
        console.print(f"[bold]forecast[/]: {forecast} (actual {w.label_word}){retried}")
    if result.as_json()["in_sample"]:
        console.print(f"[yellow]in-sample[/]: the policy was trained on days up to {result.data_end}; "
                      "this day says nothing about skill.")


def render_evidence(evidence: list[dict]) -> None:
    """The items an evidence-first answer cited: direction, its reason (none when the line is the item's
    own words, as a derived answer's are), and the point and texts it names."""
    for e in evidence:
        sign = {"+": "[green]+[/]", "-": "[red]−[/]", "0": "[dim]0[/]"}.get(e.get("direction") or "", "?")
        texts = ", ".join(f"t{i}" for i in e.get("texts", []))
        note = e.get("note") or ""
        said = "" if note == quote(e.get("point") or "") else f" {escape(note)}"
        console.print(f"  {sign} [bold]{escape(e['item'])}[/]{said} "
                      f"[dim]← {e.get('day')}: {escape(e.get('point') or '')} ({texts})[/]", highlight=False)


@app.command("stance")
def stance_cmd(
    file: Annotated[Path, typer.Argument(help="A CSV, TSV, xlsx or JSONL file with a column of texts.")],
    text_column: Annotated[str, typer.Option("--text-column", help="The column of texts (comma-separated for several, "
                                             "e.g. sentence,kor_sentence).")] = "text",
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="A column of gold labels (positive, "
                            "neutral, negative): score the judgements against it instead of listing them.")] = None,
    lang: Annotated[Optional[str], typer.Option("--lang", help="ko or en for every text (default: each text's own, "
                    "Hangul → ko).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write one row per text (text, stance, p_positive, "
                   "p_neutral, p_negative[, label]) as .csv or .jsonl.")] = None,
    examples: Annotated[Optional[Path], typer.Option("--examples", help="A labelled file (the same text columns; labels "
                        "in --label-column, else 'label'): each text is shown its most similar texts of each label there "
                        "as worked examples, in place of the prompt's own (about 4x slower a text).")] = None,
    examples_per_label: Annotated[int, typer.Option(help="With --examples: the nearest texts of each label shown.")] = EXAMPLES_PER_LABEL,
    policy: PolicyOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    concurrency: setting("concurrency") = None,
    prompts: PromptsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge each text: is it good (positive), bad (negative) or neither (neutral) news for the stock?

    The three probabilities are read from the model's log-probs of the label words
    (prompts/<lang>/stance.toml), not from a sampled word. With --label-column it prints n,
    accuracy with a 95% CI, accuracy on the positive and negative rows alone (the larger of the two
    probabilities), macro-F1 and the confusion matrix. Judgements are cached: a killed run resumes.

    Examples:
      sep stance headlines.csv --text-column title --out stances.csv
      sep stance phrasebank.csv --text-column kor_sentence --label-column label --json
      sep stance phrasebank.csv --text-column kor_sentence --label-column label --policy runs/stance
      sep stance test.csv --text-column kor_sentence --label-column label --examples train.csv
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, prompts=prompts,
                       concurrency=concurrency)
        with model_errors(), bars() as progress:
            result = api.stance(file, text_column=text_column, label_column=label_column, lang=lang, out=out,
                                examples=examples, examples_per_label=examples_per_label, settings=cfg,
                                progress=stage_progress(progress))
    if as_json:
        return print(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
    render_stances(result, out)


def render_stances(result: Any, out: Path | None) -> None:
    """The judgements (the first 50) or, against gold labels, the scores and the confusion matrix."""
    if result.scores is None:
        table = Table("stance", "positive", "neutral", "negative", "text", title=f"stance by {result.model}")
        for j in result.judged[:50]:
            table.add_row(j.stance, *(f"{j.probs[s]:.2f}" for s in ("positive", "neutral", "negative")),
                          escape(j.text[:80]))
        console.print(table)
        if len(result.judged) > 50:
            console.print(f"… {len(result.judged) - 50} more" + (f" in {out}" if out else " (use --out FILE)"))
        return
    s = result.scores
    ci = s["accuracy_ci95"]
    console.print(f"[bold]{s['n']}[/] texts judged by {result.model}: accuracy [bold]{s['accuracy']:.3f}[/] "
                  f"(95% CI {ci[0]:.3f}-{ci[1]:.3f}), positive vs negative {s['accuracy_posneg']:.3f} "
                  f"on {s['n_posneg']}, macro-F1 {s['macro_f1']:.3f}")
    table = Table("gold \\ judged", "positive", "neutral", "negative", title="confusion")
    for gold, row in s["confusion"].items():
        table.add_row(gold, *(str(row[p]) for p in ("positive", "neutral", "negative")))
    console.print(table)
    if out:
        console.print(f"wrote {out}")


@app.command("predict")
def predict_cmd(
    stock: StockArg,
    date: DateArg,
    best_of: setting("best_of") = None,
    policy: PolicyOpt = None,
    reward: Annotated[Optional[Path], typer.Option("--reward", help="A `sep train reward` run that picks the best candidate; unset: the policy's label probability.")] = None,
    temperature: setting("temperature") = None,
    window_days: WindowDaysOpt = None,
    summarizer: SummarizerOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    prompts: PromptsOpt = None,
    explain_format: ExplainFormatOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample N explanations and let the reward model pick one, with a confidence in [0, 1].

    Without --policy it samples the embedded model (or the --base-url server). The result is stored
    in `predictions` (method best-of-n).

    Examples:
      sep predict --stock 005930 --date 2022-06-01 --best-of 4
      sep predict --stock 005930 --date 2022-06-01 --best-of 8 --policy runs/ppo --reward runs/rm --json
    """
    with user_errors():
        cfg = settings(db=db, base_url=base_url, model=model, policy=policy, threads=threads, prompts=prompts,
                       explain_format=explain_format, best_of=best_of, temperature=temperature,
                       window_days=window_days, summarizer=summarizer)
        memory = api.open_memory(cfg.db, must_exist=True)
        with model_errors(), bars(percent=True) as progress:
            forecast = api.forecast(memory, stock, date, reward=reward, settings=cfg, progress=stage_progress(progress))
    window = forecast.window
    if as_json:
        print(json.dumps(forecast.as_json(), ensure_ascii=False, indent=2))
        return
    render_window(window)
    table = Table("#", "label", "reward", "explanation", title=f"{len(forecast.candidates)} candidates, scored by {forecast.scored_by}")
    for i, c in enumerate(forecast.candidates):
        mark = "→ " if i == forecast.best else ""
        table.add_row(f"{mark}{i}", label_word(c.label, window.stock), f"{c.reward:.3f}", escape(c.explanation[:120]))
    console.print(table)
    verdict = "correct" if forecast.label == window.label else "wrong"
    console.print(f"[bold]prediction[/]: {label_word(forecast.label, window.stock)} "
                  f"(confidence {forecast.confidence:.2f}); actual {window.label_word} → {verdict}")
    if forecast.as_json()["in_sample"]:
        console.print(f"[yellow]in-sample[/]: a run used here was trained on days up to {forecast.data_end}; "
                      "this day says nothing about skill.")


@app.command("demo")
def demo_cmd(
    db: DbOpt = None,
    stock: Annotated[str, typer.Option("--stock", help="Stock in the bundled sample.")] = "005930",
    date: Annotated[str, typer.Option("--date", help="Decision day inside the sample.")] = "2022-06-01",
    trials: TrialsOpt = None,
    import_only: Annotated[bool, typer.Option("--import-only", help="Import the sample and show the window; run no model.")] = False,
    # kept so older scripts still run: the sample is news, whose days show their top titles by default (auto)
    fast: Annotated[bool, typer.Option("--fast", hidden=True, help="Extractive summaries (now the sample's default).")] = False,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    prompts: PromptsOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the bundled sample: import it, `sep dedup` it, then `sep reflect` with the embedded model.

    The sample is 005930 prices for 2022 and 1,243 Samsung news titles of 2022-05-01..06-01
    (see sep/sample/PROVENANCE.md). The first run prepares the model (Qwen2.5-Coder-1.5B) in
    ~/.cache/sep. Every generated text is shown with its quality flags (⚑), if any.
    """
    with user_errors():
        cfg = settings(db=db, trials=trials, summarizer="extractive" if fast else None, base_url=base_url, prompts=prompts,
                       model=model, threads=threads)
        memory = api.open_memory(cfg.db)
        imported = api.import_sample(memory)
        if not as_json:
            print_reports(imported.files, as_json=False)
        if import_only:
            window = api.show_window(memory, stock, date, settings=cfg)
            if as_json:
                print(json.dumps({"imported": imported.as_json(), "window": window.as_json()}, ensure_ascii=False,
                                 indent=2))
            else:
                render_window(window)
            return
        if missing_extra("dedup"):
            err_console.print("[dim]Skipping dedup: install the dedup extra to keep only representative texts.[/]")
        else:
            deduped = dedup_with_bars(memory, cfg, stock, None, None, refit=False)
            if not as_json:
                render_dedup(deduped, topics=0)
        days = api.decision_days(memory, stock, date=date)
    run_reflect(memory, stock, days, cfg, as_json=as_json)
