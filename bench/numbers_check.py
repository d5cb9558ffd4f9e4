"""Does any generated text hold a number its inputs lack without being flagged?

Decides the bundled sample's demo day (2022-06-01) and four other days with the default model and
3 trials (so wrong forecasts write lessons), then reads every stored summary point, explanation
and lesson back and checks it again, against inputs rebuilt from the memory (not the ones the
gate saw): a summary against its day's titles, an explanation against its stored prompt, a lesson
against the prompt and the answer it reflects on. Prints how many texts hold a number none of
their inputs hold, and how many of those the gate let through (should be 0), with each number.
Run: .venv/bin/python bench/numbers_check.py [--db MEMORY] [--days 2022-05-26,...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import sep
from sep.evidence import strip_citations
from sep.quality import date_numbers, invented_numbers

DAYS = "2022-05-26,2022-05-27,2022-05-30,2022-05-31,2022-06-01"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="a memory to copy (its cached summaries are reused)")
    parser.add_argument("--days", default=DAYS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sep-numbers-"))
    path = work / "sep.db"
    if args.db:
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{args.db}{suffix}").exists():
                shutil.copy(f"{args.db}{suffix}", f"{path}{suffix}")
    db = sep.open_memory(path)
    if not args.db:
        sep.import_sample(db)
    db.execute("DELETE FROM predictions")
    db.execute("DELETE FROM reflections")
    db.conn.commit()
    cfg = sep.Settings(db=path, trials=3)
    llm = sep.make_llm(cfg)
    days = args.days.split(",")
    for day in days:
        sep.reflect(db, "005930", date=day, settings=cfg, llm=llm)
        print(f"decided {day}", flush=True)

    checked = holding = passed = 0
    found: list[str] = []

    def check(kind: str, day: str, text: str, inputs: str, flags: str | None, known: set[float]) -> None:
        nonlocal checked, holding, passed
        checked += 1
        numbers = invented_numbers(text, inputs, known)
        if numbers:
            holding += 1
            passed += not flags
            found.append(f"{'LET THROUGH' if not flags else 'flagged'} {kind} {day}: {', '.join(numbers)} "
                         f"(flags {flags}) | {' '.join(text.split())[:120]}")

    first = min(days)
    for day, summary, method, flags, attempt in db.execute(
            "SELECT date, summary, method, flags, attempt FROM summaries WHERE stock = '005930' AND date >= date(?, '-6 day')"
            " AND date <= ? AND model NOT IN ('extractive')", [first, max(days)]).fetchall():
        titles = "\n".join(t for (t,) in db.execute("SELECT title FROM texts WHERE stock = '005930' AND date = ?", [day]))
        text = summary if method == "model" else attempt or ""
        check("summary", day, strip_citations(text), titles, flags if method != "model" else None, date_numbers(day))
    for day, trial, response, prompt, flags in db.execute(
            "SELECT date, trial, response, prompt, flags FROM predictions WHERE stock = '005930'").fetchall():
        user = json.loads(prompt)[-1]["content"]
        check(f"explanation (trial {trial})", day, response, user, flags, date_numbers(day))
        lesson = db.execute("SELECT reflection, flags FROM reflections WHERE stock = '005930' AND date = ? AND trial = ?",
                            [day, trial]).fetchone()
        if lesson:
            check("lesson", day, lesson[0], user + "\n" + response, lesson[1], date_numbers(day))
    print(f"\n{checked} texts checked on {len(days)} days ({', '.join(days)}): {holding} hold a number their "
          f"inputs lack; the gate let {passed} of them through.")
    for line in found:
        print("  " + line)


if __name__ == "__main__":
    main()
