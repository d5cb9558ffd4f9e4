"""Korean stance variants beside the shipped prompt (docs/agents.md, "The stance step"): each is
compared on a sample of dev.csv's *train* part (never the test rows), with its own bias fitted on
the tune part. Development figures; none of the variants is shipped.

    python bench/stance_variants.py                  # A (shipped), B, C, AC, BC on the dev sample
    python bench/stance_variants.py --part test A    # one variant on the test part
    python bench/stance_variants.py --headlines      # A, N, NX on the Samsung headlines of 05-05..18

A: the shipped prompt. B: three more worked examples (plain rises and falls in figures).
C: the model translates the sentence to English, the English prompt judges it.
AC, BC: the two variants' log-probs averaged.
N: the stock is named ("Stock: 삼성전자\nNews: <headline>", the examples likewise, and news about another
company is neutral). NX: N plus one worked example of another company's order from the named one.
N and NX are read on the labelled headlines' first half (tests/fixtures/samsung_headlines_2022-05.csv,
05-05..18, where bench/stance.py allows prompt changes to be tried), uncalibrated.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from langchain_core.prompts import ChatPromptTemplate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stance import DEV, HEADLINES, balanced, biased, fit_bias, split  # noqa: E402
from sep.backends.registry import make_llm  # noqa: E402
from sep.memory import open_memory  # noqa: E402
from sep.prompting import PROMPTS_DIR  # noqa: E402
from sep.settings import Settings  # noqa: E402
from sep.stances import STANCES, Judged, StanceJudge, stance_scores  # noqa: E402

MORE_EXAMPLES = """
[[examples]]
user = "한빛전자의 올해 1분기 매출은 1,230억원으로 작년 같은 기간의 1,050억원보다 늘었다."
assistant = "positive"
[[examples]]
user = "대성화학은 경기도 평택 공장에서 배터리 소재를 생산하며 직원은 350명이다."
assistant = "neutral"
[[examples]]
user = "대성화학의 상반기 순이익은 82억원으로 전년 동기 95억원에서 줄었다."
assistant = "negative"
"""
TRANSLATE = ChatPromptTemplate.from_messages([
    ("system", "Translate the Korean financial news sentence into English. Answer with the English sentence only."),
    ("user", "{text}")])


def variant_b(folder: Path) -> Path:
    """The shipped Korean stance prompt with three more worked examples, in a prompts folder."""
    shipped = (PROMPTS_DIR / "ko" / "stance.toml").read_text(encoding="utf-8")
    head, calibration = shipped.split("# 모델별 보정")
    (folder / "ko").mkdir(parents=True, exist_ok=True)
    (folder / "ko" / "stance.toml").write_text(head.rstrip() + "\n" + MORE_EXAMPLES + "\n# 모델별 보정" + calibration,
                                               encoding="utf-8")
    return folder


def variant_named(folder: Path, other_company: bool) -> Path:
    """The shipped Korean stance prompt asked about a named stock (N), with one more example (NX)."""
    shipped = (PROMPTS_DIR / "ko" / "stance.toml").read_text(encoding="utf-8")
    head, examples = shipped.split("# 모델별 보정")[0].split("[[examples]]", 1)
    head = head.replace("the stock price of the company it is about.", "the stock price of the company on the Stock line.")
    head = head.replace("neither good nor bad: schedules", "neither good nor bad for that company: schedules")
    head = head.replace("plain figures.", "plain figures, news about another company.")
    examples = re.sub(r'user = "(.*?)"', lambda m: 'user = "Stock: {}\\nNews: {}"'.format(
        "한빛전자" if "한빛" in m.group(1) else "대성화학", m.group(1)), "[[examples]]" + examples)
    if other_company:
        examples += '[[examples]]\nuser = "Stock: 한빛전자\\nNews: 대성건설, 한빛전자로부터 800억원 규모 공장 증설 공사 수주"\n' \
                    'assistant = "neutral"\n'
    (folder / "ko").mkdir(parents=True, exist_ok=True)
    (folder / "ko" / "stance.toml").write_text(head + examples, encoding="utf-8")
    return folder


def averaged(a: list[Judged], b: list[Judged]) -> list[Judged]:
    out = []
    for x, y in zip(a, b):
        logs = [0.5 * (math.log(max(x.probs[s], 1e-9)) + math.log(max(y.probs[s], 1e-9))) for s in STANCES]
        exp = [math.exp(v) for v in logs]
        out.append(Judged(x.text, x.lang, {s: e / sum(exp) for s, e in zip(STANCES, exp)}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", default=["A", "B", "C", "AC", "BC"])
    ap.add_argument("--part", choices=("dev", "test"), default="dev", help="dev: a sample of the train part.")
    ap.add_argument("--per-label", type=int, default=60)
    ap.add_argument("--headlines", action="store_true", help="A, N and NX on the Samsung headlines of 05-05..18.")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.mkdtemp()), help="Judgements and translations.")
    args = ap.parse_args()
    if args.headlines:
        return headlines(args.cache)
    if not DEV.is_file():
        sys.exit(f"No {DEV}: this bench reads ../shared/data/phrasebank/dev.csv (see its README).")
    frame = pd.read_csv(DEV)
    frame["part"] = split(frame)
    rows = balanced(frame[frame.part == ("train" if args.part == "dev" else "test")], args.per_label,
                    seed=1 if args.part == "dev" else 0)
    tune = balanced(frame[frame.part == "tune"], args.per_label)
    args.cache.mkdir(parents=True, exist_ok=True)
    db = open_memory(args.cache / "stance.db")
    llm = make_llm(Settings())
    judges = {"A": StanceJudge(llm, db=db, calibrate=False),
              "B": StanceJudge(llm, prompts_dir=variant_b(args.cache / "prompts"), db=db, calibrate=False)}
    saved = args.cache / "translations.json"
    translations = json.loads(saved.read_text()) if saved.exists() else {}

    def translated(texts: list[str]) -> list[str]:
        for text in texts:
            if text not in translations:
                said = llm.ask(TRANSLATE, {"text": text}, max_tokens=80, temperature=0.0, agent="translate")
                translations[text] = str(said.content).strip().split("\n")[0]
                saved.write_text(json.dumps(translations, ensure_ascii=False))
        return [translations[t] for t in texts]

    def judged(variant: str, texts: list[str]) -> list[Judged]:
        if variant in judges:
            return judges[variant].judge(texts, "ko")
        if variant == "C":
            return [Judged(t, "ko", j.probs) for t, j in zip(texts, judges["A"].judge(translated(texts), "en"))]
        return averaged(judged(variant[0], texts), judged("C", texts))

    print(f"Korean, {args.part} ({args.per_label} per label), model {judges['A'].model}; development figures")
    for variant in args.variants:
        start = time.time()
        scored, tuned = judged(variant, list(rows.kor_sentence)), judged(variant, list(tune.kor_sentence))
        bias = fit_bias(tuned, list(tune.label))
        raw, cal = stance_scores(scored, list(rows.label)), stance_scores(biased(scored, bias), list(rows.label))
        print(f"{variant:<3} untrained {raw['accuracy']:.3f} · bias {bias[1:]} → {cal['accuracy']:.3f} "
              f"{cal['accuracy_ci95']} pos/neg {cal['accuracy_posneg']:.3f} ({time.time() - start:.0f} s)")


def headlines(cache: Path) -> None:
    """The stock named or not, on the labelled headlines' first half (uncalibrated: a named prompt has no fit)."""
    frame = pd.read_csv(HEADLINES)
    frame = frame[frame.date <= "2022-05-18"]
    cache.mkdir(parents=True, exist_ok=True)
    db, llm = open_memory(cache / "stance.db"), make_llm(Settings())
    print(f"Samsung headlines 05-05..18 ({len(frame)}, one annotator's labels), untrained; development figures")
    named = [f"Stock: 삼성전자\nNews: {t}" for t in frame.title]
    for name, folder, texts in (("A", None, list(frame.title)), ("N", variant_named(cache / "named", False), named),
                                ("NX", variant_named(cache / "named_x", True), named)):
        s = stance_scores(StanceJudge(llm, prompts_dir=folder, db=db, calibrate=False).judge(texts, "ko"), list(frame.label))
        wrong = s["confusion"]["neutral"]["positive"]
        print(f"{name:<3} {s['accuracy']:.3f} {s['accuracy_ci95']} pos/neg {s['accuracy_posneg']:.3f}; neutral read as "
              f"positive: {wrong}")


if __name__ == "__main__":
    main()
