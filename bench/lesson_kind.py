"""Which kind of news was the item that misled? (a lesson's {kind}, docs/agents.md step 4)

Reads labelled texts (tests/fixtures/news_kinds.csv: split, lang, text, kind; one reader's labels)
and names each text's kind three ways, with the default model embedded:

* model: the kind step alone, the kinds' first-token log-probs with their hints (sep before cues);
* cues: the [lesson] cues alone (a kind only where one kind's cues match most; else no answer);
* cues, then model (the default): the cues decide where one kind leads, the model chooses among
  tied kinds, or among all when no cue matches.

Two splits, each labelled before anything was run on it. `tune`: KakaoBank headlines and tweets of
five SN2 tickers, drawn after the first cues were written; the cues were then widened once on its
errors, so its figures are development figures. `test`: Samsung headlines of February to April 2022
and tweets of six other SN2 tickers, drawn and labelled after that, never used to change a cue.
Texts no kind fits (ads, ticker lists) were left out. Still one reader's labels.
Run: .venv/bin/python bench/lesson_kind.py [--split test] [--show-errors]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections import Counter
from pathlib import Path

from sep.agents import Agents, cued_kinds
from sep.backends.registry import make_llm
from sep.memory import open_memory
from sep.settings import Settings

LABELS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "news_kinds.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS, help="CSV with split, lang, text, kind")
    parser.add_argument("--split", choices=("tune", "test", "all"), default="all", help="which labelled rows to read")
    parser.add_argument("--show-errors", action="store_true", help="print every text the default way got wrong")
    args = parser.parse_args()
    rows = [r for r in csv.DictReader(args.labels.open(encoding="utf-8")) if args.split in ("all", r["split"])]
    llm = make_llm(Settings())
    db = open_memory(Path(tempfile.mkdtemp(prefix="sep-kind-")) / "sep.db")
    for split, lang in sorted({(r["split"], r["lang"]) for r in rows}, reverse=True):
        agents = Agents(db, llm, lang)
        lesson = agents.prompts["reflect"].lesson
        kinds, hints, cues = lesson["kinds"], lesson.get("hints", ()), lesson["cues"]
        subset = [r for r in rows if (r["split"], r["lang"]) == (split, lang)]
        right, answered, errors, took = Counter(), Counter(), [], time.time()
        for r in subset:
            model_kind, _ = agents.news_kind(r["text"], kinds, hints)  # no cues: the model alone
            cued = cued_kinds(r["text"], kinds, cues)
            both, _ = agents.news_kind(r["text"], kinds, hints, cues)
            right["model"] += model_kind == r["kind"]
            answered["model"] += 1
            if len(cued) == 1:
                answered["cues"] += 1
                right["cues"] += cued[0] == r["kind"]
            right["default"] += both == r["kind"]
            answered["default"] += 1
            if both != r["kind"]:
                errors.append((r["text"], r["kind"], both, model_kind))
        n = len(subset)
        print(f"{split} {lang}: {n} texts, {time.time() - took:.0f} s")
        for way in ("model", "cues", "default"):
            print(f"  {way:8s} right {right[way]:3d} of {n} ({right[way] / n:.3f}); "
                  f"answered {answered[way]} ({right[way] / max(answered[way], 1):.3f} of those)")
        if args.show_errors:
            for text, gold, said, model_kind in errors:
                print(f"    {gold} ← said {said} (model alone: {model_kind}): {text[:90]}")


if __name__ == "__main__":
    main()
