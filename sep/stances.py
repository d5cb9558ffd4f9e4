"""The model's judgement of single texts: is this news good (positive), bad (negative) or neither
(neutral) for the company's stock? (`sep stance`, `sep.stance`)

The three probabilities are read from the log-probs of the label words' first tokens at the
answer's position, under a grammar (or vLLM's structured output) that only allows the label
words: a probability, never a sampled word. Prompts are `prompts/<lang>/stance.toml`; a trained
stance run (`sep train stance`) carries the prompt it learned on in `RUN/prompts`. Judgements of
summary points are cached in memory (`stances`), keyed by text, model and prompt version, so a
point shared by many windows is judged once.

A prompt may carry a per-model `[calibration]` bias (log-space, one number per label), fitted by
`bench/stance.py` on a tune split of labelled sentences it is then never scored on ("calibrate before use":
a small model's label words have priors of their own).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.errors import BadInput
from sep.llm import LLM, answered_probabilities
from sep.shapes import AnswerShape
from sep.memory import cached_stances, store_stances
from sep.prompting import Prompt, load_prompt
from sep.settings import EXAMPLES_PER_LABEL, default

STANCES = ("positive", "neutral", "negative")
SIGN = {"positive": "+", "neutral": "0", "negative": "-"}  # how an evidence line writes a stance
_HANGUL = re.compile(r"[가-힣]")
Progress = Callable[[int, int], None]


# what a tweet wraps its news in, which says nothing of the news: a retweet's "RT @user:", links,
# the cashtags it leads with, a "BREAKING NEWS:" banner. One story retweeted and tagged two ways
# ("RT @DeItaone: BROADCOM TO ACQUIRE VMWARE…", "$VMW $AVGO - BROADCOM TO ACQUIRE VMWARE…") was
# judged negative and positive; read without its wrapping, it is one text with one judgement.
_WRAPPING = [re.compile(r"^RT @\w+:\s*"), re.compile(r"https?://\S*"),
             re.compile(r"^(?:\$[A-Za-z][A-Za-z.]{0,6}\b[\s,:\-–]*)+"),
             re.compile(r"^(?:BREAKING(?: NEWS)?|JUST IN|NEW ARTICLE)\s*:\s*", re.IGNORECASE)]


def news_of(text: str) -> str:
    """The text a stance is judged on: whitespace collapsed and a tweet's wrapping taken off (the
    text as it was when nothing is left)."""
    out, before = " ".join(text.split()), ""
    while out != before:  # a banner may follow the cashtags, or lead them
        before = out
        for pattern in _WRAPPING:
            out = pattern.sub("", out).strip(" -–:")
    out = " ".join(out.split())
    return out or " ".join(text.split())


def detect_lang(text: str) -> str:
    """ko when the text holds Hangul, else en."""
    return "ko" if _HANGUL.search(text or "") else "en"


def net_stance(probs: dict[str, float]) -> float:
    """P(positive) - P(negative): how far a text pushes the stock, in [-1, 1]. What the stance-only
    baseline averages, what sets an evidence-derived confidence and what breaks a derived tie."""
    return probs["positive"] - probs["negative"]


@dataclass
class Judged:
    """One text's stance: P(positive), P(neutral), P(negative)."""

    text: str
    lang: str
    probs: dict[str, float]

    @property
    def stance(self) -> str:
        return max(STANCES, key=lambda s: self.probs[s])

    @property
    def score(self) -> float:
        """How far the text pushes the stock, in [-1, 1] (`net_stance`)."""
        return net_stance(self.probs)

    def as_json(self) -> dict:
        return {"text": self.text, "lang": self.lang, "stance": self.stance,
                **{f"p_{s}": round(self.probs[s], 4) for s in STANCES}}


def stance_prompt(lang: str, prompts_dir: Path | None = None) -> Prompt:
    """The stance prompt of a language; its `labels` name positive, neutral and negative in that order."""
    prompt = load_prompt(lang, "stance", prompts_dir)
    if len(prompt.labels) != 3 or len({w.split()[0] for w in prompt.labels}) != 3:
        raise BadInput(f"The stance prompt for {lang} needs `labels`: three distinct answer words for positive, "
                       f"neutral and negative (it has {list(prompt.labels)}).")
    return prompt


def asked_version(prompt: Prompt) -> str:
    """What the model is asked (system, examples, turns, label words), hashed: the cache key of a
    judgement. A file's comments and its [calibration] table, applied after, leave it unchanged."""
    asked = [prompt.system, prompt.examples, prompt.turns, prompt.labels]
    return hashlib.sha1(json.dumps(asked, ensure_ascii=False).encode()).hexdigest()[:12]


def calibrated(probs: Sequence[float], bias: Sequence[float] | None) -> list[float]:
    """Probabilities shifted by a log-space bias (one number per label) and renormalised."""
    if not bias:
        return list(probs)
    logits = [math.log(max(p, 1e-12)) + b for p, b in zip(probs, bias)]
    top = max(logits)
    exp = [math.exp(v - top) for v in logits]
    return [e / sum(exp) for e in exp]


class ExamplePool:
    """Labelled texts shown beside a text as its worked examples: the `per_label` most similar texts
    of each label in its language, the most similar last (kNN demonstrations, Liu et al. 2022).
    Similarity is the cosine of character 2-4-gram tf-idf vectors (scikit-learn's `char_wb` with
    sublinear tf, written out here). The text itself, when the pool holds it, is never its own example."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], per_label: int = EXAMPLES_PER_LABEL) -> None:
        if per_label < 1:
            raise BadInput(f"--examples-per-label must be at least 1, not {per_label}.")
        self.per_label = per_label
        self.rows: dict[str, list[tuple[str, str]]] = {}
        for text, label in zip(texts, labels):
            self.rows.setdefault(detect_lang(text), []).append((news_of(text), label))
        self._index: dict[str, tuple[dict[str, tuple[Any, Any]], dict[str, float]]] = {}

    @classmethod
    def read(cls, path: Path, text_columns: Sequence[str], label_column: str,
             per_label: int = EXAMPLES_PER_LABEL) -> "ExamplePool":
        table = read_table(path, text_columns, label_column)
        return cls(table.texts, table.labels or [], per_label)

    def _postings(self, lang: str) -> tuple[dict[str, tuple[Any, Any]], dict[str, float]]:
        """Per n-gram, the rows holding it and their unit-vector weights (an inverted index), and the idf."""
        import numpy as np

        if lang not in self._index:
            grams = [Counter(char_grams(t)) for t, _ in self.rows.get(lang, [])]
            df = Counter(g for c in grams for g in c)
            idf = {g: math.log((1 + len(grams)) / (1 + n)) + 1 for g, n in df.items()}
            lists: dict[str, tuple[list[int], list[float]]] = {}
            for row, counts in enumerate(grams):
                for g, w in tfidf(counts, idf).items():
                    lists.setdefault(g, ([], []))[0].append(row)
                    lists[g][1].append(w)
            self._index[lang] = ({g: (np.array(r), np.array(w)) for g, (r, w) in lists.items()}, idf)
        return self._index[lang]

    def nearest(self, text: str, lang: str) -> tuple[tuple[str, str], ...]:
        """(text, label) of the examples shown beside `text`, least similar first."""
        import numpy as np

        postings, idf = self._postings(lang)
        rows = self.rows.get(lang, [])
        sims = np.zeros(len(rows))
        for g, w in tfidf(Counter(char_grams(text)), idf).items():
            at, weights = postings[g]
            sims[at] += w * weights
        wanted = {s: self.per_label for s in STANCES}
        picked = []
        for i in np.argsort(-sims, kind="stable"):
            if wanted.get(rows[i][1], 0) and rows[i][0] != text:
                picked.append(i)
                wanted[rows[i][1]] -= 1
            if not any(wanted.values()):
                break
        return tuple(rows[i] for i in sorted(picked, key=lambda i: sims[i]))


def char_grams(text: str, low: int = 2, high: int = 4) -> list[str]:
    """Character n-grams inside each space-padded word, lower-cased (scikit-learn's `char_wb`)."""
    out = []
    for word in text.lower().split():
        word = f" {word} "
        for n in range(low, high + 1):
            out += [word[i:i + n] for i in range(max(len(word) - n, 0) + 1)]
            if len(word) <= n:
                break
    return out


def tfidf(counts: Counter, idf: dict[str, float]) -> dict[str, float]:
    """A text's n-gram counts as a tf-idf vector of length 1 (sublinear tf), over the n-grams `idf` knows:
    one weighting for the pool's texts and the text they are searched for."""
    vector = {g: (1 + math.log(n)) * idf[g] for g, n in counts.items() if g in idf}
    norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
    return {g: v / norm for g, v in vector.items()}


class StanceJudge:
    """Judges texts with one model. `db` caches judgements (optional); `calibrate` applies the
    prompt's bias for this model when it has one; `examples` replaces the prompt's worked examples
    with each text's nearest labelled ones (the prompt's bias, fitted without them, is then not applied)."""

    def __init__(self, llm: LLM | None, *, prompts_dir: Path | None = None, db: sqlite_utils.Database | None = None,
                 calibrate: bool = True, concurrency: int = default("concurrency"),
                 examples: ExamplePool | None = None) -> None:
        self.llm, self.prompts_dir, self.db, self.calibrate, self.examples = llm, prompts_dir, db, calibrate, examples
        self.concurrency = concurrency if llm is not None and llm.parallel else 1
        self.model = (llm.name.split("@", 1)[0] if llm else "dry-run")
        self._prompts: dict[str, Prompt] = {}

    def prompt(self, lang: str) -> Prompt:
        if lang not in self._prompts:
            self._prompts[lang] = stance_prompt(lang, self.prompts_dir)
        return self._prompts[lang]

    def bias(self, lang: str) -> list[float] | None:
        """The prompt's calibration for this model, when it has one and calibration is on."""
        if not self.calibrate or self.examples is not None:
            return None
        return self.prompt(lang).calibration.get(self.model)

    def prompt_for(self, text: str, lang: str) -> Prompt:
        """The prompt a text is judged with: the language's, or with the pool's examples for this text."""
        prompt = self.prompt(lang)
        if self.examples is None:
            return prompt
        words = dict(zip(STANCES, prompt.labels))
        return dataclasses.replace(prompt, examples=tuple((t, words[s]) for t, s in self.examples.nearest(text, lang)))

    def _ask(self, text: str, prompt: Prompt) -> list[float]:
        message = self.llm.ask(prompt.template, {"text": text}, shape=AnswerShape.choice(*prompt.labels),
                               max_tokens=4, agent="stance")
        return answered_probabilities(message, prompt.labels)

    def judge(self, texts: Sequence[str], lang: str | None = None, progress: Progress | None = None) -> list[Judged]:
        """Every text judged on its news (`news_of`; cached ones read back); `lang` None: each text's
        own (Hangul → ko)."""
        if self.llm is None:
            raise BadInput("Judging stances needs a model (this is a dry run).")
        langs = [lang or detect_lang(t) for t in texts]
        asked = [news_of(t) for t in texts]
        prompts = [self.prompt_for(t, g) for t, g in zip(asked, langs)]
        keys = [(self.key(t), self.model, asked_version(p)) for t, p in zip(asked, prompts)]
        raw: dict[int, list[float]] = {}
        if self.db is not None:
            known = cached_stances(self.db, keys)
            raw = {i: known[k] for i, k in enumerate(keys) if k in known}
        todo = [i for i in range(len(texts)) if i not in raw]
        done = len(texts) - len(todo)
        if progress:
            progress(done, len(texts))

        def one(i: int) -> tuple[int, list[float]]:
            return i, self._ask(asked[i], prompts[i])

        batch: list[tuple[tuple[str, str, str], list[float]]] = []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for i, probs in pool.map(one, todo) if self.concurrency > 1 else map(one, todo):
                raw[i] = probs
                batch.append((keys[i], probs))
                done += 1
                if progress:
                    progress(done, len(texts))
                if self.db is not None and len(batch) >= 50:  # a killed run keeps what it judged
                    store_stances(self.db, batch)
                    batch = []
        if self.db is not None and batch:
            store_stances(self.db, batch)
        return [Judged(t, g, dict(zip(STANCES, calibrated(raw[i], self.bias(g)))))
                for i, (t, g) in enumerate(zip(texts, langs))]

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(" ".join(text.split()).encode()).hexdigest()[:20]


# ---------------------------------------------------------------- files and scores


@dataclass
class Table:
    """Texts read from a file, with their gold labels when a label column was named."""

    texts: list[str]
    labels: list[str] | None = None
    columns: list[str] = field(default_factory=list)


_LABEL_ALIASES = {"positive": "positive", "pos": "positive", "neutral": "neutral", "neu": "neutral",
                  "negative": "negative", "neg": "negative", "긍정": "positive", "중립": "neutral", "부정": "negative"}


def text_columns(spec: str) -> list[str]:
    """The columns a `--text-column` names: comma-separated, as `sep stance` and `sep train stance` take it."""
    return [c.strip() for c in spec.split(",") if c.strip()]


def read_table(path: Path, text_columns: Sequence[str], label_column: str | None = None) -> Table:
    """Rows of a CSV, xlsx or JSONL file: each named text column's texts (one row per text), and
    the labels (positive/neutral/negative) when `label_column` is given. One sentence on any error."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"No file {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        elif suffix in (".xlsx", ".xlsm", ".xls"):
            frame = pd.read_excel(path, dtype=str).fillna("")
        elif suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=suffix == ".jsonl", dtype=False).astype(str)
        else:
            raise BadInput(f"{path.name}: sep stance reads .csv, .tsv, .xlsx or .jsonl files, not {suffix or 'this'}.")
    except BadInput:
        raise
    except Exception as exc:  # pandas' parsers raise many kinds
        raise BadInput(f"Can't read {path} as a table: {type(exc).__name__}: {exc}".split("\n")[0]) from None
    columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise BadInput(f"{path} has no rows.")
    for column in [*text_columns, *([label_column] if label_column else [])]:
        if column not in columns:
            raise BadInput(f"{path} has no column {column!r} (it has {', '.join(columns)}); name it with "
                           f"{'--label-column' if column == label_column else '--text-column'}.")
    texts: list[str] = []
    labels: list[str] = []
    for n, row in enumerate(frame.to_dict("records"), 2):
        gold = None
        if label_column:
            raw = str(row[label_column]).strip().lower()
            gold = _LABEL_ALIASES.get(raw)
            if gold is None:
                raise BadInput(f"{path} row {n}: label {row[label_column]!r} in {label_column!r} is not positive, "
                               "neutral or negative.")
        for column in text_columns:
            text = " ".join(str(row[column]).split())
            if text:
                texts.append(text)
                if gold:
                    labels.append(gold)
    if not texts:
        raise BadInput(f"{path} has no text in {', '.join(text_columns)}.")
    return Table(texts, labels if label_column else None, columns)


def wilson(hits: int, n: int, z: float = 1.959964) -> list[float] | None:
    """The Wilson score interval of a proportion (95%)."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def stance_scores(judged: Sequence[Judged], gold: Sequence[str]) -> dict:
    """n, 3-class accuracy with its 95% CI, accuracy_posneg (on rows labelled positive or negative,
    the larger of P(positive) and P(negative)), macro-F1 and the confusion matrix (gold → predicted)."""
    n = len(gold)
    predicted = [j.stance for j in judged]
    hits = sum(p == g for p, g in zip(predicted, gold))
    polar = [(j, g) for j, g in zip(judged, gold) if g != "neutral"]
    posneg = sum((j.probs["positive"] > j.probs["negative"]) == (g == "positive") for j, g in polar)
    confusion = {g: {p: sum(1 for a, b in zip(gold, predicted) if a == g and b == p) for p in STANCES} for g in STANCES}
    f1s = []
    for s in STANCES:
        tp = confusion[s][s]
        fp = sum(confusion[g][s] for g in STANCES) - tp
        fn = sum(confusion[s].values()) - tp
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"n": n, "accuracy": hits / n if n else None, "accuracy_ci95": wilson(hits, n),
            "accuracy_posneg": posneg / len(polar) if polar else None, "n_posneg": len(polar),
            "macro_f1": sum(f1s) / 3, "confusion": confusion}


def write_judged(judged: Sequence[Judged], out: Path, gold: Sequence[str] | None = None) -> None:
    """One row per text (text, lang, stance, p_positive, p_neutral, p_negative[, label]) as CSV or
    JSONL by the file's suffix, written whole or not at all."""
    out = Path(out)
    rows = [{**j.as_json(), **({"label": gold[i]} if gold else {})} for i, j in enumerate(judged)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    if out.suffix.lower() == ".csv":
        import pandas as pd

        pd.DataFrame(rows).to_csv(tmp, index=False)
    else:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
