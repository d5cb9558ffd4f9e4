"""Derived, evidence first or label first: which explain format should be the default?

Decides the same days three times with the default model (greedy trial 0, the forecast, no
lessons): with `explain_label.toml` (the label on the first line, then the reasons: sep's format
until issue 22), with `explain.toml` (the 1-3 items that matter, each cited by text id with the
model's own direction, then the label after "판단:", then two sentences), and with
`explain_derived.toml` (every item judged first by the stance step; the cited items carry those
directions and the label follows from them, ties left to the model). All read the same cached
summaries, so only the explain prompt differs. For each format it prints:

* raw accuracy (the label against the next close, flags ignored) and gated accuracy (a flagged
  answer counts as wrong, as `sep eval` counts it), with the share of days each flag fired;
* mean confidence (P of the answered label, read at the label's position);
* for evidence first: the accuracy of the *evidence vote* (the sign of the cited items' net
  direction, where it is not a tie): do small models label items better than they reason?

It also prints every summary point the gate flagged on these days (fused, invented_numbers), so
false positives can be read by eye, and writes every answer to --out (JSON lines).

Every dataset here is from 2022, older than the model's training data: the model may remember
what happened. Read the formats' difference and the flag rates, not the accuracy as skill; with
~20 days a 10-point accuracy gap is noise (a 95% interval is about ±20 points).
Run: .venv/bin/python bench/explain_format.py [--days 20] [--out bench-explain.jsonl]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import sep
from sep.agents import Agents
from sep.evidence import window_stance
from sep.decide import decidable_days
from sep.window import decision_window


def recheck(row: dict) -> dict:
    """A stored answer parsed and flagged again with the current parser and gate (no model call)."""
    from sep.agents import load_prompt, prompt_files
    from sep.evidence import check_evidence
    from sep.llm import parse_answer
    from sep.quality import Check

    if "items" not in row:
        return row
    prompt = load_prompt("ko", prompt_files(row["format"])["explain"])
    answer = parse_answer(row["response"], "ko", prompt.label_after)
    check = Check("", row["inputs"], row["start"], row["day"], kind="explanation")
    flags = [f for f in row["flags"] if f == "copied"] + [f for f in check.flags(answer.explanation) if f != "copied"]
    if prompt.label_after:
        flags += [f for f in check_evidence(answer, row["items"], check)
                  if f not in flags]
    return {**row, "label": answer.label, "flags": flags, "evidence": answer.evidence,
            "vote": evidence_vote(answer.evidence) if prompt.label_after else None}


FORMATS = ("label", "evidence", "derived")


def evidence_vote(evidence: list[dict]) -> str | None:
    net = sum(1 if e.get("direction") == "+" else -1 if e.get("direction") == "-" else 0 for e in evidence)
    return "up" if net > 0 else "down" if net < 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20, help="the last N decidable days of the sample")
    parser.add_argument("--stock", default="005930")
    parser.add_argument("--end", help="the last day to decide (default: the stock's last text)")
    parser.add_argument("--db", type=Path, help="a memory to use (copied); default: a fresh import of the sample")
    parser.add_argument("--out", type=Path, default=Path("bench-explain.jsonl"))
    parser.add_argument("--formats", default=",".join(FORMATS), help="which formats to ask, comma-separated")
    parser.add_argument("--report", type=Path, help="print the tables of an earlier run's answers (its --out); run no model")
    args = parser.parse_args()
    if args.report:  # the stored answers checked again by today's gate (no model runs)
        rows = [recheck(json.loads(line)) for line in args.report.read_text(encoding="utf-8").splitlines()]
        report(rows, args.stock, "(from " + str(args.report) + ")")
        return

    formats = [f for f in FORMATS if f in args.formats.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sep-bench-"))
    path = work / "sep.db"
    if args.db:
        shutil.copy(args.db, path)
    db = sep.open_memory(path)
    if not args.db:
        sep.import_sample(db)
    cfg = sep.Settings(db=path, trials=1)
    llm = sep.make_llm(cfg)
    last_text = args.end or db.execute("SELECT max(date) FROM texts WHERE stock = ?", [args.stock]).fetchone()[0]
    days = decidable_days(db, args.stock, "1900-01-01", last_text)[-args.days:]  # days whose windows hold texts
    rows, started = [], time.time()
    with args.out.open("w", encoding="utf-8") as out:
        for i, day in enumerate(days, 1):
            window = decision_window(db, args.stock, day, cfg.window_days)
            for fmt in formats:
                agents = Agents.for_stock(db, llm, args.stock, cfg.with_overrides(explain_format=fmt))
                summaries = agents.summaries(window)
                variables = agents.explain_variables(window, summaries, [])
                answer = agents.explain(variables)
                row = {"day": day, "format": fmt, "actual": window.label, "label": answer.label,
                       "confidence": answer.confidence, "flags": answer.flags, "evidence": answer.evidence,
                       "vote": evidence_vote(answer.evidence) if fmt != "label" else None,
                       "window_stance": window_stance(variables["_items"]),
                       "response": answer.response, "items": variables["_items"],
                       "inputs": variables["summaries"], "start": window.window_start,
                       "summary_flags": {d: agents.summary_info.get((args.stock, d), ("", None))[1]
                                         for d, _ in summaries}}
                rows.append(row)
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
            print(f"{i}/{len(days)} {day} ({time.time() - started:.0f} s)", flush=True)

    report(rows, args.stock, f"model {llm.name}")
    flagged_days = {(d, f) for r in rows for d, f in r["summary_flags"].items() if f}
    print(f"\nsummary days the gate sent to the extractive fallback: {len(flagged_days)}")
    for d, f in sorted(flagged_days):
        row = db.execute("SELECT attempt FROM summaries WHERE stock = ? AND date = ? AND flags = ? LIMIT 1",
                         [args.stock, d, f]).fetchone()
        print(f"  {d} ({f}): {' / '.join((row[0] or '').splitlines())[:200] if row else ''}")
    print(f"\nanswers: {args.out}")


def report(rows: list[dict], stock: str, source: str) -> None:
    days = sorted({r["day"] for r in rows})
    ups = sum(actual == "up" for actual in {r["day"]: r["actual"] for r in rows}.values())
    print(f"\n{len(days)} days of {stock}, {days[0]}..{days[-1]}, {source}; {ups} closed up, {len(days) - ups} down "
          "(always answering the majority side scores the larger share). 2022 data predates the model: not skill.\n")
    print("| format | n | raw accuracy | gated accuracy | flagged | answered 상승 | mean confidence | flags (share of days) |")
    print("|---|---|---|---|---|---|---|---|")
    for fmt in [f for f in FORMATS if any(r["format"] == f for r in rows)]:
        mine = [r for r in rows if r["format"] == fmt]
        n = len(mine)
        raw = sum(r["label"] == r["actual"] for r in mine) / n
        gated = sum(r["label"] == r["actual"] and not r["flags"] for r in mine) / n
        flagged = sum(bool(r["flags"]) for r in mine) / n
        confs = [r["confidence"] for r in mine if r["confidence"] is not None]
        counts = Counter(f for r in mine for f in r["flags"])
        shares = ", ".join(f"{f} {c / n:.0%}" for f, c in counts.most_common()) or "none"
        mean_conf = f"{sum(confs) / len(confs):.2f}" if confs else "n/a"
        said_up = sum(r["label"] == "up" for r in mine)
        print(f"| {fmt} | {n} | {raw:.2f} | {gated:.2f} | {flagged:.0%} | {said_up}/{n} | {mean_conf} | {shares} |")
    for fmt in ("evidence", "derived"):
        mine = [r for r in rows if r["format"] == fmt]
        if mine:
            shifted = sum(any(e.get("cited_as") for e in r["evidence"] or []) for r in mine)
            print(f"{fmt}: answers citing an id with another item's words (read as the item quoted): {shifted}/{len(mine)}")
    voted = [r for r in rows if r["format"] == "evidence" and r["vote"]]
    if voted:
        agree = sum(r["vote"] == r["label"] for r in voted)
        down = sum(r["vote"] == "down" for r in voted)
        print(f"\nevidence vote (net direction of the cited items; {len(voted)} of {len(days)} days not a tie, "
              f"{down} of them down): accuracy {sum(r['vote'] == r['actual'] for r in voted) / len(voted):.2f}; the "
              f"label agrees with it on {agree}/{len(voted)}; the label's accuracy on those days "
              f"{sum(r['label'] == r['actual'] for r in voted) / len(voted):.2f}")
    stanced = [r for r in rows if r["format"] == "derived" and r.get("window_stance")]
    if stanced:
        right = sum(("up" if r["window_stance"] > 0 else "down") == r["actual"] for r in stanced)
        print(f"stance-only baseline (the sign of the window's mean P(positive) - P(negative), no explanation): "
              f"{right}/{len(stanced)} = {right / len(stanced):.2f}; "
              f"{sum(r['window_stance'] < 0 for r in stanced)} of {len(stanced)} days lean down")


if __name__ == "__main__":
    main()
