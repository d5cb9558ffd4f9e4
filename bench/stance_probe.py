"""A linear head on the stance prompt's embedding, beside the LoRA stance run (issue 31, item 3).
Not shipped; development figures (docs/agents.md, "The stance step").

Each text is put in the stance prompt of its language without the worked examples (what `sep train
stance` learns on), rendered in the base's chat format up to the answer, and embedded by the base
GGUF through llama.cpp (last-token pooling, `sep.backends.embedded.GGUFEncoder`: one prefill, about
2 s a text on 2 cores). A multinomial logistic regression is fitted on Financial PhraseBank's train
part (`--per-label` texts per label and language), its C chosen by 5-fold cross-validation on those
texts alone, and scored on the test part (60 per label, as bench/stance.py) and on the 115 labelled
Samsung headlines of May 2022 (tests/fixtures/samsung_headlines_2022-05.csv, the Korean head).

    python bench/stance_probe.py                          # 100 per label: about 35 minutes
    python bench/stance_probe.py --cache /tmp/probe       # embeddings kept (and reused) as .npy
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stance import COLUMNS, DEV, HEADLINES, balanced, split  # noqa: E402
from sep.backends.embedded import GGUFEncoder  # noqa: E402
from sep.llm import ChatFormat  # noqa: E402
from sep.models import local_model  # noqa: E402
from sep.settings import Settings  # noqa: E402
from sep.stances import STANCES, Judged, stance_prompt, stance_scores  # noqa: E402

GRID = (0.3, 1.0, 3.0, 10.0)


def embed(encoder: GGUFEncoder, fmt: ChatFormat, texts: list[str], lang: str, cache: Path | None, name: str) -> np.ndarray:
    """The stance prompt (no worked examples) of each text, embedded at its last token; cached by name."""
    path = cache / f"{name}.npy" if cache else None
    if path and path.exists():
        return np.load(path)
    prompt = dataclasses.replace(stance_prompt(lang), examples=())
    rendered = [fmt.prompt(prompt.messages(text=t)) for t in texts]
    start, vectors = time.time(), []
    for i in range(0, len(rendered), 8):
        vectors += encoder(rendered[i:i + 8])
    print(f"  embedded {name}: {len(texts)} texts, {(time.time() - start) / len(texts):.2f} s a text", file=sys.stderr)
    out = np.array(vectors)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out


def fit(x: np.ndarray, y: list[str]):
    """Logistic regression, C chosen by 5-fold cross-validation on the training texts only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    cv = {c: cross_val_score(LogisticRegression(C=c, max_iter=5000), x, y, cv=5).mean() for c in GRID}
    best = max(cv, key=cv.get)
    return LogisticRegression(C=best, max_iter=5000).fit(x, y), best, cv[best]


def judged(model, x: np.ndarray, texts: list[str], lang: str) -> list[Judged]:
    probs = model.predict_proba(x)
    order = [list(model.classes_).index(s) for s in STANCES]
    return [Judged(t, lang, dict(zip(STANCES, (float(p[k]) for k in order)))) for t, p in zip(texts, probs)]


def line(name: str, s: dict) -> str:
    ci = s["accuracy_ci95"]
    return f"{name:<44} {s['n']:>4} {s['accuracy']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})  {s['accuracy_posneg']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEV)
    ap.add_argument("--per-label", type=int, default=100, help="Training texts per label and language.")
    ap.add_argument("--cache", type=Path, help="Keep the embeddings here as .npy (and reuse them).")
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"No {args.data}: this bench reads ../shared/data/phrasebank/dev.csv (see its README).")
    cfg = Settings()
    model = local_model(cfg.cache_dir, "qwen2.5-coder-1.5b")
    encoder, fmt = GGUFEncoder(model, cfg.threads, 4096), ChatFormat.of(model.chat_template)
    frame = pd.read_csv(args.data)
    frame["part"] = split(frame)
    n = args.per_label
    train, test = balanced(frame[frame.part == "train"], n, seed=1), balanced(frame[frame.part == "test"], 60)
    heads = pd.read_csv(HEADLINES)
    x_train, x_test = {}, {}
    for lang in ("ko", "en"):
        x_train[lang] = embed(encoder, fmt, list(train[COLUMNS[lang]]), lang, args.cache, f"{lang}_train_{n}")
        x_test[lang] = embed(encoder, fmt, list(test[COLUMNS[lang]]), lang, args.cache, f"{lang}_test_60")
    x_heads = embed(encoder, fmt, list(heads.title), "ko", args.cache, "ko_headlines")
    print(f"A linear head on {model.name}'s embedding of the stance prompt; Financial PhraseBank dev split, "
          f"{n} training texts per label and language, 60 test texts per label. Development figures.")
    print(f"{'':<44} {'n':>4} 3-class (95% CI)        pos/neg")
    y = list(train.label)
    both = fit(np.vstack([x_train["ko"], x_train["en"]]), y + y)
    for lang in ("ko", "en"):
        own = fit(x_train[lang], y)
        for name, (head, c, cv) in ((f"{lang} head (C={own[1]}, cv {own[2]:.3f})", own),
                                    (f"ko+en head (C={both[1]}, cv {both[2]:.3f})", both)):
            scores = stance_scores(judged(head, x_test[lang], list(test[COLUMNS[lang]]), lang), list(test.label))
            print(line(f"[{lang} test] {name}", scores))
        if lang == "ko":
            for name, (head, c, cv) in (("ko head", own), ("ko+en head", both)):
                scores = stance_scores(judged(head, x_heads, list(heads.title), "ko"), list(heads.label))
                print(line(f"[Samsung headlines] {name}", scores))


if __name__ == "__main__":
    main()
