"""The stance step on Financial PhraseBank, both languages: untrained (the label words' log-probs),
calibrated three ways, and a trained stance run, on sentences none of them was tuned or trained on.

    python bench/stance.py                      # untrained + calibrated, default model
    python bench/stance.py --policy runs/stance # adds the trained run's rows
    python bench/stance.py --write-split DIR    # the train/tune/test CSVs `sep train stance` reads
    python bench/stance.py --langs headlines    # only the shipped Samsung headlines (no ../shared needed)
    python bench/stance.py --examples           # adds the nearest labelled examples' row (`sep stance --examples`)
    python bench/stance.py --per-label 60 --sample 2  # a second test sample, disjoint from the first

The split is by a hash of the English sentence (sha1 mod 10): 0-1 test, 2 tune, 3-9 train, so a
sentence and its translation always fall on the same side. Test rows are `--per-label` per label
(balanced, as the source's held-out 300 are: 100 per label); `--sample 2` draws them from the test
rows the first sample left, so a figure can be checked on sentences nobody has looked at. Calibrations:
- contextual (Zhao et al. 2021): divide by the probabilities of content-free inputs ("N/A", "", "[MASK]");
- prior (label-free): divide by the mean probabilities over the tune split's texts;
- bias: a log-space bias per label fitted by maximum likelihood on `--per-label` tune rows per label.
Everything on ../shared's dev.csv is a development figure (the source's own 300 held-out sentences
are elsewhere), and the model may have seen Financial PhraseBank in its training data.

`headlines` (in --langs) scores the stance step where sep uses it, on real news titles:
tests/fixtures/samsung_headlines_2022-05.csv, 115 Naver Finance titles about Samsung Electronics of
May 2022 (the ones its summaries kept), each labelled by one of us for its likely effect on the
stock, without the model's judgements at hand: a development set of one annotator. It prints the
untrained model, the prompt's shipped calibration (fitted on PhraseBank) and contextual calibration,
for 05-05..18 and 05-19..31 apart (prompt changes may only be tried on the first).

`--examples` adds a row judged beside each text's nearest labelled texts (`sep.stances.ExamplePool`,
2 per label, uncalibrated): the pool is the train part on PhraseBank, and for the headlines the
other half of the month (05-19..31's titles are shown 05-05..18's and the other way round),
and beside as many drawn at random from the same half (does nearness matter?).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sep.backends.registry import make_llm  # noqa: E402
from sep.memory import open_memory  # noqa: E402
from sep.settings import Settings  # noqa: E402
from sep.stances import STANCES, ExamplePool, Judged, StanceJudge, calibrated, stance_scores  # noqa: E402

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "phrasebank" / "dev.csv"
HEADLINES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "samsung_headlines_2022-05.csv"
COLUMNS = {"ko": "kor_sentence", "en": "sentence"}
CONTENT_FREE = ("N/A", "", "[MASK]")


def split(frame: pd.DataFrame) -> pd.Series:
    bucket = frame.sentence.map(lambda s: int(hashlib.sha1(s.encode()).hexdigest(), 16) % 10)
    return bucket.map(lambda b: "test" if b <= 1 else "tune" if b == 2 else "train")


def balanced(frame: pd.DataFrame, per_label: int, seed: int = 0) -> pd.DataFrame:
    return pd.concat([frame[frame.label == s].sample(min(per_label, (frame.label == s).sum()), random_state=seed)
                      for s in STANCES])


def test_sample(test: pd.DataFrame, per_label: int, sample: int) -> pd.DataFrame:
    """The `sample`-th balanced draw of the test part, disjoint from the draws before it."""
    for _ in range(sample - 1):
        test = test.drop(index=balanced(test, per_label).index)
    return balanced(test, per_label)


def content_free(judge: StanceJudge, lang: str) -> list[float]:
    """Contextual calibration's divisor: the mean probabilities of the content-free inputs."""
    free = judge.judge(list(CONTENT_FREE), lang)
    return [sum(j.probs[s] for j in free) / len(free) for s in STANCES]


def shifted(judged: list[Judged], divide: list[float]) -> list[Judged]:
    out = []
    for j in judged:
        p = [j.probs[s] / max(d, 1e-9) for s, d in zip(STANCES, divide)]
        out.append(Judged(j.text, j.lang, dict(zip(STANCES, (x / sum(p) for x in p)))))
    return out


def fit_bias(judged: list[Judged], gold: list[str]) -> list[float]:
    """Log-space bias (positive fixed at 0) maximising the likelihood of the gold labels."""
    from scipy.optimize import minimize

    logs = [[math.log(max(j.probs[s], 1e-9)) for s in STANCES] for j in judged]
    y = [STANCES.index(g) for g in gold]

    def nll(b: list[float]) -> float:
        total = 0.0
        for row, k in zip(logs, y):
            z = [row[0], row[1] + b[0], row[2] + b[1]]
            top = max(z)
            total -= z[k] - top - math.log(sum(math.exp(v - top) for v in z))
        return total / len(y)

    found = minimize(nll, [0.0, 0.0], method="Nelder-Mead")
    return [0.0, round(float(found.x[0]), 3), round(float(found.x[1]), 3)]


def biased(judged: list[Judged], bias: list[float]) -> list[Judged]:
    """The shipped calibration (`sep.stances.calibrated`), so the bench scores what `sep stance` applies."""
    return [Judged(j.text, j.lang, dict(zip(STANCES, calibrated([j.probs[s] for s in STANCES], bias)))) for j in judged]


def row(name: str, s: dict, seconds: float | None = None) -> str:
    ci = s["accuracy_ci95"]
    c = s["confusion"]
    worst = max(((g, p) for g in STANCES for p in STANCES if g != p), key=lambda gp: c[gp[0]][gp[1]])
    speed = f"{seconds:6.2f}" if seconds is not None else "     -"
    return (f"{name:<28} {s['n']:>4} {s['accuracy']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})  {s['accuracy_posneg']:.3f}  "
            f"{s['macro_f1']:.3f}  {speed}  most common error: {worst[0]} → {worst[1]} ({c[worst[0]][worst[1]]})")


class RandomPool(ExamplePool):
    """The ablation of nearness: as many examples of each label, drawn at random (seeded by the text)."""

    def nearest(self, text: str, lang: str) -> tuple[tuple[str, str], ...]:
        rng = random.Random(hashlib.sha1(text.encode()).hexdigest())
        rows = [r for r in self.rows.get(lang, []) if r[0] != text]
        picked = [r for s in STANCES for r in rng.sample([r for r in rows if r[1] == s], self.per_label)]
        rng.shuffle(picked)
        return tuple(picked)


def other_half(base: StanceJudge, frame: pd.DataFrame, pool_kind: type[ExamplePool] = ExamplePool) -> list[Judged]:
    """Each headline judged beside its nearest labelled headlines of the other half of the month."""
    first = frame.date <= "2022-05-18"
    out: dict[int, Judged] = {}
    for part in (first, ~first):
        pool = pool_kind(list(frame.title[~part]), list(frame.label[~part]))
        judge = StanceJudge(base.llm, db=base.db, calibrate=False, examples=pool)
        out |= dict(zip(frame.index[part], judge.judge(list(frame.title[part]), "ko")))
    return [out[i] for i in frame.index]


def kept(judged: list[Judged], rows: pd.Series) -> list[Judged]:
    """The judgements of one period's headlines."""
    return [j for j, keep in zip(judged, rows) if keep]


def headlines(base: StanceJudge, path: Path, trained: StanceJudge | None = None, name: str = "",
              examples: bool = False) -> None:
    """The stance step on real Korean headlines, untrained and calibrated, by period."""
    frame = pd.read_csv(path)
    start = time.time()
    raw = base.judge(list(frame.title), "ko")
    seconds = (time.time() - start) / len(frame)
    contextual = content_free(base, "ko")
    shipped = base.prompt("ko").calibration.get(base.model)
    done = trained.judge(list(frame.title), "ko") if trained is not None else None
    shown = other_half(base, frame) if examples else None
    drawn = other_half(base, frame, RandomPool) if examples else None
    print(f"Samsung Electronics headlines, May 2022 ({path.name}; one annotator's labels: a development set); "
          f"model {base.model}")
    print(f"{'':<28} {'n':>4} 3-class (95% CI)        pos/neg macro-F1 s/text")
    for period, rows in (("05-05..18", frame.date <= "2022-05-18"), ("05-19..31", frame.date > "2022-05-18"),
                         ("all", frame.date == frame.date)):
        judged, gold = kept(raw, rows), list(frame.label[rows])
        print(f"[headlines {period}]")
        print(row("untrained (log-probs)", stance_scores(judged, gold), seconds))
        if shipped:
            print(row(f"shipped calibration {shipped[1:]}", stance_scores(biased(judged, shipped), gold)))
        print(row("contextual calibration", stance_scores(shifted(judged, contextual), gold)))
        if done is not None:
            print(row(f"trained ({name})", stance_scores(kept(done, rows), gold)))
        if shown is not None:
            print(row("examples: the other half", stance_scores(kept(shown, rows), gold)))
            print(row("  drawn at random instead", stance_scores(kept(drawn, rows), gold)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEV)
    ap.add_argument("--per-label", type=int, default=100, help="Test (and tune) rows per label and language.")
    ap.add_argument("--sample", type=int, default=1, help="Which balanced draw of the test part: 2 is disjoint from 1.")
    ap.add_argument("--langs", default="ko,en")
    ap.add_argument("--policy", type=Path, help="A `sep train stance` run to score beside the untrained model.")
    ap.add_argument("--db", type=Path, help="Memory that caches judgements (default: a temporary one).")
    ap.add_argument("--write-split", type=Path, help="Write train.csv, tune.csv, test.csv there and stop.")
    ap.add_argument("--headlines", type=Path, default=HEADLINES, help="Labelled headlines (date, title, label).")
    ap.add_argument("--examples", action="store_true", help="Add the row judged beside the nearest labelled texts.")
    args = ap.parse_args()
    langs = args.langs.split(",")
    frame = None
    if args.write_split or set(langs) - {"headlines"}:
        if not args.data.is_file():
            sys.exit(f"No {args.data}: this bench reads ../shared/data/phrasebank/dev.csv (see its README).")
        frame = pd.read_csv(args.data)
        frame["part"] = split(frame)
    if args.write_split:
        args.write_split.mkdir(parents=True, exist_ok=True)
        for part in ("train", "tune", "test"):
            frame[frame.part == part].drop(columns="part").to_csv(args.write_split / f"{part}.csv", index=False)
        print(f"wrote {args.write_split}/train.csv, tune.csv, test.csv: "
              + ", ".join(f"{p} {(frame.part == p).sum()}" for p in ("train", "tune", "test")))
        return
    db = open_memory(args.db or Path(tempfile.mkdtemp()) / "stance.db")
    cfg = Settings()
    base = StanceJudge(make_llm(cfg), db=db, calibrate=False)
    trained = None
    if args.policy:
        prompts = args.policy / "prompts" if (args.policy / "prompts").is_dir() else None
        trained = StanceJudge(make_llm(cfg.with_overrides(policy=args.policy)), prompts_dir=prompts, db=db, calibrate=False)
    if "headlines" in langs:
        headlines(base, args.headlines, trained, args.policy.name if args.policy else "", args.examples)
        langs.remove("headlines")
    if not langs:
        return
    test = test_sample(frame[frame.part == "test"], args.per_label, args.sample)
    tune = balanced(frame[frame.part == "tune"], args.per_label)
    print(f"Financial PhraseBank dev split (sha1 mod 10: test 0-1, tune 2, train 3-9), test sample {args.sample}: "
          f"{args.per_label} rows per label; model {base.model}. Development figures: not the source's held-out 300.")
    print(f"{'':<28} {'n':>4} 3-class (95% CI)        pos/neg macro-F1 s/text")
    for lang in langs:
        col = COLUMNS[lang]
        texts, gold = list(test[col]), list(test.label)
        start = time.time()
        raw = base.judge(texts, lang)
        seconds = (time.time() - start) / len(texts)
        tuned = base.judge(list(tune[col]), lang)
        contextual = content_free(base, lang)
        prior = [sum(j.probs[s] for j in tuned) / len(tuned) for s in STANCES]
        bias = fit_bias(tuned, list(tune.label))
        print(f"[{lang}]")
        print(row("untrained (log-probs)", stance_scores(raw, gold), seconds))
        print(row("contextual calibration", stance_scores(shifted(raw, contextual), gold)))
        print(row("prior calibration (tune)", stance_scores(shifted(raw, prior), gold)))
        print(row(f"bias fitted on tune {bias[1:]}", stance_scores(biased(raw, bias), gold)))
        print(f"  {lang}: calibration = {bias} for the prompt file's [calibration] table "
              f"(content-free P: {[round(x, 3) for x in contextual]}, tune mean P: {[round(x, 3) for x in prior]})")
        if trained is not None:
            start = time.time()
            done = trained.judge(texts, lang)
            print(row(f"trained ({args.policy.name})", stance_scores(done, gold), (time.time() - start) / len(texts)))
        if args.examples:
            train = frame[frame.part == "train"]
            shown = StanceJudge(base.llm, db=db, calibrate=False, examples=ExamplePool(list(train[col]), list(train.label)))
            start = time.time()
            done = shown.judge(texts, lang)
            print(row("examples: nearest of train", stance_scores(done, gold), (time.time() - start) / len(texts)))


if __name__ == "__main__":
    main()
