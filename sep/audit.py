"""Explanation audit: is each stored explanation consistent, grounded, and free of the future?

1. consistency: the stance of the words (bullish vs bearish lexicon) agrees with the label;
2. grounding: a claim (sentence) is grounded only through the texts of its own window: it shares
   enough content words with one of them, or with a summary point whose cited texts support that
   point. The model's own summary alone grounds nothing. Each claim lists the titles it rests on;
3. time: no date after D is mentioned (YYYY-MM-DD, YYYY.MM.DD, YYYY년 M월 D일, M월 D일, M/D);
4. judge (optional): the configured LLM scores relevance, clarity and consistency on 1-7;
5. faithfulness (optional, `faithfulness=N`): for N evidence-first forecasts, the model that answered
   is asked again, once with the items it cited removed from its prompt and once with only them.
   Removing the evidence *moves* the forecast when the label flips or P(up) shifts by at least
   FAITHFUL_SHIFT; an explanation whose evidence moves nothing is *decorative*. Answers are cached
   in `faithfulness`, so a rerun (or a run stopped by a dead server) asks only what is missing.

The HTML report is rendered by jinja2 with autoescape (board titles are untrusted input), with
inline SVG charts (no scripts), and has a JSON twin for machines.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlite_utils

from sep.evidence import (cited_ids, evidence_up_probability, judge_items, resolve_evidence, shown_items,
                          stored_answer_shape, strip_citations)
from sep.prompting import Prompt, literal_template
from sep.stances import StanceJudge
from sep.evaluate import Decision, decisions, equity_curves, evaluate, once_per_interval
from sep.memory import PredictionStore, SummaryStore, stock_name
from sep.memory.audit import FLAGGED, FaithfulnessStore, stored_flags, text_sources
from sep.quality import FLAGS, concluded, content_words, dates_in
from sep.settings import default
from sep.window import decision_window, label_word, lang_of, up_probability

BULLISH = ["상승", "오를", "오르", "올라", "호재", "개선", "증가", "매수", "반등", "강세", "긍정", "기대", "상향", "회복",
           "positive", "rise", "gain", "bullish", "growth", "up"]
BEARISH = ["하락", "내릴", "내리", "떨어", "악재", "부진", "감소", "매도", "약세", "부정", "우려", "하향", "둔화", "위축",
           "negative", "fall", "drop", "bearish", "decline", "down"]
GROUNDED = 0.3  # share of a claim's content words found in one source
FAITHFUL_SHIFT = 0.10  # |ΔP(up)| that counts as the evidence moving the forecast (a flipped label always does)
_WORD = re.compile(r"[가-힣]{2,}|[A-Za-z]{3,}|\d+(?:\.\d+)?")


@dataclass
class Claim:
    text: str
    support: float
    cites: list[str]  # text:<id> of the texts it rests on (directly or through a summary point)
    sources: list[str] = field(default_factory=list)  # their titles, as the report shows them

    @property
    def grounded(self) -> bool:
        return self.support >= GROUNDED


@dataclass
class Audit:
    stock: str
    date: str
    label: str | None
    actual: str
    correct: bool
    confidence: float | None
    explanation: str
    stance: str
    consistent: bool
    claims: list[Claim]
    future_dates: list[str]
    judge: dict | None = None
    issues: list[str] = field(default_factory=list)
    withheld: int = 0  # texts of its window that addressed the model and were kept out of its prompts

    def as_json(self) -> dict:
        out = asdict(self)
        out["claims"] = [{**asdict(c), "grounded": c.grounded} for c in self.claims]
        out["label_word"], out["actual_word"] = label_word(self.label, self.stock), label_word(self.actual, self.stock)
        return out


def _lexicon_hits(text: str, lexicon: list[str]) -> int:
    """Korean stems count inside words (상승세, 오를 것); English words only whole ("up" is not in "support")."""
    low = text.lower()
    english = set(re.findall(r"[a-z]+", low))
    return sum(w in english if w.isascii() else low.count(w) for w in lexicon)


def stance(text: str) -> str:
    """The way an explanation argues: its last forecast of the price (the gate's `concluded`), else
    the balance of bullish and bearish words."""
    said = concluded(text)
    if said:
        return said
    bull, bear = _lexicon_hits(text, BULLISH), _lexicon_hits(text, BEARISH)
    return "up" if bull > bear else "down" if bear > bull else "neutral"


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def claims_of(explanation: str) -> list[str]:
    parts = re.split(r"(?<=[.!?。])\s+|\n+|(?<=다\.)", explanation)
    return [p.strip(" -•*") for p in parts if len(words(p)) >= 2]


@dataclass
class Sources:
    """What a decision's claims may rest on: the window's texts, and summary points with the
    window texts they cite (a point citing nothing in the window is no source)."""

    texts: dict[int, tuple[str, set[str]]]             # id -> (title, content words)
    points: list[tuple[set[str], list[int]]]           # (content words, cited window text ids)
    drop: set[str]                                      # the stock's code and name: in every text, proof of nothing
    withheld: int = 0                                   # texts of the window that address the model (never prompted)


def sources(db: sqlite_utils.Database, d: Decision, window_days: int) -> Sources:
    """Every text the decision's window could read (nothing after D) and the summary points of its days."""
    w = decision_window(db, d.stock, d.date, window_days)
    drop = content_words(f"{d.stock} {stock_name(db, d.stock)}")
    texts = {t.id: (t.title, content_words(t.title + " " + (t.body or ""), drop)) for t in w.texts}
    points = []
    for summary in SummaryStore(db).texts_between(d.stock, w.window_start, d.date):
        for line in summary.splitlines():
            cited = [i for i in cited_ids(line) if i in texts]
            if cited:
                points.append((content_words(strip_citations(line), drop), cited))
    return Sources(texts, points, drop, len(w.withheld))


def _share(claim: set[str], source: set[str]) -> float:
    return len(claim & source) / len(claim) if claim else 0.0


def ground(claim: str, srcs: Sources) -> Claim:
    """The best support a claim has in its window's texts, directly or through a supported point."""
    cw = content_words(claim, srcs.drop)
    found: list[tuple[float, list[int]]] = [(_share(cw, tw), [i]) for i, (_, tw) in srcs.texts.items()]
    for pw, cited in srcs.points:
        if _share(pw, set().union(*(srcs.texts[i][1] for i in cited))) >= GROUNDED:  # the point rests on its texts
            found.append((_share(cw, pw), cited))
    found.sort(key=lambda f: (-f[0], f[1]))
    best = found[0][0] if found else 0.0
    ids = list(dict.fromkeys(i for share, cited in found[:3] if share >= GROUNDED for i in cited))[:3]
    return Claim(claim, round(best, 3), [f"text:{i}" for i in ids], [srcs.texts[i][0] for i in ids])


def audit_one(db: sqlite_utils.Database, d: Decision, window_days: int) -> Audit:
    srcs = sources(db, d, window_days)
    claims = [ground(text, srcs) for text in claims_of(d.explanation)]
    st = stance(d.explanation)
    future = sorted({x for x in dates_in(d.explanation, int(d.date[:4])) if x > d.date})
    a = Audit(d.stock, d.date, d.label, d.actual, d.label == d.actual, d.confidence, d.explanation, st,
              st == "neutral" or st == d.label, claims, future, withheld=srcs.withheld)
    if a.withheld:
        a.issues.append(f"{a.withheld} text(s) of the window addressed the model and were withheld")
    if not a.consistent:
        a.issues.append(f"stance {st} contradicts the label {d.label}")
    unsupported = [c for c in claims if not c.grounded]
    if unsupported:
        a.issues.append(f"{len(unsupported)} of {len(claims)} claims unsupported")
    if future:
        a.issues.append("mentions dates after D: " + ", ".join(future))
    return a


JUDGE_ASPECTS = ("relevance", "clarity", "consistency")


def judge(llm, d: Decision, lang: str) -> dict:
    """The configured LLM's 1-7 scores on SEP's aspects (prompts/<lang>/judge.toml)."""
    from sep.agents import load_prompt

    prompt = load_prompt(lang, "judge")
    message = llm.ask(prompt.template, {"label": d.label or "?", "explanation": d.explanation}, max_tokens=40,
                      agent="judge")
    scores = [int(x) for x in re.findall(r"(?<!\d)([1-7])(?!\d)", str(message.content))][:len(JUDGE_ASPECTS)]
    return dict(zip(JUDGE_ASPECTS, scores))


# ---------------------------------------------------------------- faithfulness: does the cited evidence matter?

_ITEM_LINE = re.compile(r"^\[(t\d+)\] ")
_DAY_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2}\]$")


def without_items(messages: list[dict], keep) -> list[dict]:
    """The chat with the item lines ([t57] ...) of its last user turn kept only where `keep(id)`;
    a day left with no item loses its heading. The worked example and the lessons are untouched."""
    lines = [ln for ln in messages[-1]["content"].split("\n")
             if not (_ITEM_LINE.match(ln) and not keep(_ITEM_LINE.match(ln).group(1)))]
    lines = [ln for i, ln in enumerate(lines)
             if not (_DAY_LINE.match(ln) and not (i + 1 < len(lines) and _ITEM_LINE.match(lines[i + 1])))]
    return [*messages[:-1], {**messages[-1], "content": "\n".join(lines)}]


def faithfulness_targets(db: sqlite_utils.Database, ds: list[Decision]) -> list[dict]:
    """The audited forecasts that cited evidence, with what the test needs: the prompt, the cited
    items (ids) and the kinds (sources) of their texts."""
    out = []
    for d in ds:
        row = PredictionStore(db).forecast(d.stock, d.date, d.model, d.method)
        if not row or not row[3]:
            continue
        evidence = json.loads(row[3])
        texts = sorted({t for e in evidence for t in e.get("texts", [])})
        kinds = text_sources(db, texts)
        out.append({"decision": d, "label": row[0], "p_up": up_probability(row[0], row[1]), "prompt": row[2],
                    "items": [e["item"] for e in evidence], "kinds": kinds,
                    "key": hashlib.sha1(f"{row[2]}|{','.join(e['item'] for e in evidence)}".encode()).hexdigest()[:16]})
    return out


def ask_variant(db: sqlite_utils.Database, llm, target: dict, variant: str, explain: Prompt,
                stance_prompts: Path | None = None) -> dict:
    """One variant's answer ('without' the cited items, or 'only' them), from the cache or the model;
    `explain` is the stock's explain prompt, whose marker and evidence heading shape the answer. A
    derived forecast's variant is held to the items' judged directions and scored as the forecast was
    (P(up) from the cited items' stances, read from the stance cache)."""
    from sep.llm import as_messages, parse_answer
    from sep.shapes import AnswerShape
    from sep.settings import MAX_TOKENS
    from sep.window import LABEL_WORDS

    d = target["decision"]
    cache = FaithfulnessStore(db)
    cached = cache.get(d.stock, d.date, d.model, target["key"], variant)
    if cached:
        return {"label": cached[0], "p_up": cached[1]}
    cited = set(target["items"])
    keep = (lambda i: i not in cited) if variant == "without" else (lambda i: i in cited)
    messages = without_items(as_messages(target["prompt"]), keep)
    lang = lang_of(d.stock)
    shown = shown_items(messages)
    signs = any(sign for _, sign, _ in shown)  # a derived forecast shows judged directions
    shape = stored_answer_shape(messages, lang, explain) or AnswerShape(*LABEL_WORDS[lang].values(), explain.label_after,
                                                                       explain.evidence_head)
    message = llm.ask(literal_template(messages), {}, shape=shape, max_tokens=MAX_TOKENS["explain"], agent="explain")
    answer = parse_answer(message, lang, explain.label_after)
    p_up = up_probability(answer.label, answer.confidence)
    if signs and answer.label:  # as the forecast was scored: P(up) from the cited items' judged stances
        items = [{"item": i, "point": point, "day": "", "texts": []} for i, _, point in shown]
        judge_items(StanceJudge(llm, prompts_dir=stance_prompts, db=db), items, lang)
        answer.evidence, _ = resolve_evidence(answer, items)
        p_up = evidence_up_probability(answer.evidence)
    cache.put(d.stock, d.date, d.model, target["key"], variant, answer.label, p_up, answer.response)
    return {"label": answer.label, "p_up": p_up}


def faithfulness(db: sqlite_utils.Database, ds: list[Decision], llm, limit: int, explain: dict[str, Prompt],
                 progress=None) -> dict:
    """Ask again without, and with only, the cited evidence of up to `limit` forecasts; the rate
    at which removing it moves the forecast, overall, per model and per kind of cited text."""
    targets = faithfulness_targets(db, ds)
    model_of = (llm.name or "").split("@", 1)[0]
    asked = [t for t in targets if t["decision"].model.split("@", 1)[0] == model_of][:limit]
    rows = []
    for i, t in enumerate(asked):
        if progress:
            progress("faithfulness", i, len(asked))
        prompt = explain[lang_of(t["decision"].stock)]  # its marker (판단:) and evidence heading shape the answer
        without = ask_variant(db, llm, t, "without", prompt)
        only = ask_variant(db, llm, t, "only", prompt)
        shift = abs(without["p_up"] - t["p_up"]) if without["p_up"] is not None and t["p_up"] is not None else None
        moved_label = without["label"] != t["label"]
        d = t["decision"]
        rows.append({"stock": d.stock, "date": d.date, "model": d.model, "label": t["label"], "p_up": t["p_up"],
                     "cited": t["items"], "kinds": t["kinds"], "without": without, "only": only,
                     "moved_label": moved_label, "shift": shift,
                     "faithful": moved_label or (shift is not None and shift >= FAITHFUL_SHIFT),
                     "sufficient": only["label"] == t["label"]})
    if progress and asked:
        progress("faithfulness", len(asked), len(asked))

    def rate(rs: list[dict]) -> dict:
        shifts = [r["shift"] for r in rs if r["shift"] is not None]
        return {"n": len(rs), "faithful": sum(r["faithful"] for r in rs),
                "rate": sum(r["faithful"] for r in rs) / len(rs) if rs else None,
                "label_moved": sum(r["moved_label"] for r in rs),
                "mean_shift": sum(shifts) / len(shifts) if shifts else None,
                "sufficient": sum(r["sufficient"] for r in rs)}

    kinds = sorted({k for r in rows for k in r["kinds"]})
    return {**rate(rows), "threshold": FAITHFUL_SHIFT, "asked_model": model_of,
            "by_model": {m: rate([r for r in rows if r["model"] == m]) for m in sorted({r["model"] for r in rows})},
            "by_kind": {k: rate([r for r in rows if k in r["kinds"]]) for k in kinds},
            "no_evidence": len(ds) - len(targets),
            "other_model": sum(t["decision"].model.split("@", 1)[0] != model_of for t in targets),
            "forecasts": rows}


# ---------------------------------------------------------------- charts (matplotlib SVG inline, no scripts)


def charts(audits: list[Audit], ds: list[Decision], report: dict) -> list[dict]:
    """Charts of forecasts only: running accuracy, reliability of P(up), the coverage-accuracy
    curve, cumulative return net of costs against buy-and-hold (sep.report draws them)."""
    from sep import report as plots

    days = sorted({a.date for a in audits})
    by_day = {d: [a.correct for a in audits if a.date == d] for d in days}
    running, hits, n = [], 0, 0
    for d in days:
        hits += sum(by_day[d])
        n += len(by_day[d])
        running.append(hits / n)
    return [
        {"title": "Accuracy over time (forecasts)", "svg": plots.running(days, running, "running accuracy")},
        {"title": "Reliability: share of up closes per P(up) bin", "svg": plots.reliability({"forecasts": report["reliability"]})},
        {"title": "Coverage against accuracy", "svg": plots.coverage_accuracy({"forecasts": report["coverage_accuracy"]})},
        {"title": "Cumulative return", "svg": plots.equity({"forecasts": equity_curves(report["backtest"])})},
    ]


def build(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None, *, window_days: int,
          llm=None, lang: str = "ko", seed: int = default("seed"), method: str | None = None, model: str | None = None,
          judged: bool = False, faithful: int = 0, explain: dict[str, Prompt] | None = None, progress=None) -> dict:
    """Audit the forecasts `sep eval` scores (the headline method and model, out of sample); with
    `judged` the `llm` scores them, with `faithful=N` it answers N of them again without their evidence."""
    report = evaluate(db, stocks, start, end, seed=seed, method=method, model=model)
    f = report["forecast"]
    forecasts = [d for d in once_per_interval(decisions(db, stocks, start, end, "forecast", method=f["method"],
                                                        model=f["model"])) if not d.in_sample]
    audits = [audit_one(db, d, window_days) for d in forecasts]
    if judged and llm is not None:
        for a, d in zip(audits, forecasts):
            a.judge = judge(llm, d, lang)
    n = len(audits) or 1
    summary = {"explanations": len(audits), "inconsistent": sum(not a.consistent for a in audits),
               "with_unsupported_claims": sum(any(not c.grounded for c in a.claims) for a in audits),
               "claims": sum(len(a.claims) for a in audits),
               "grounded_claims": sum(c.grounded for a in audits for c in a.claims),
               "mentions_future": sum(bool(a.future_dates) for a in audits),
               "withheld_injections": sum(a.withheld for a in audits)}
    summary["consistency_rate"] = 1 - summary["inconsistent"] / n
    faith = faithfulness(db, forecasts, llm, faithful, explain or {}, progress) if faithful and llm is not None else None
    if faith is not None:
        summary["faithfulness_rate"] = faith["rate"]
        summary["decorative"] = faith["n"] - faith["faithful"]
    if judged and llm is not None:
        scored = {k: [a.judge[k] for a in audits if a.judge and k in a.judge] for k in JUDGE_ASPECTS}
        summary["judge_mean"] = {k: sum(v) / len(v) if v else None for k, v in scored.items()}  # a missing score is not 0
        summary["judge_missing"] = {k: len(audits) - len(v) for k, v in scored.items()}
    return {"summary": summary, "evaluation": report, "audits": [a.as_json() for a in audits],
            "quality": quality_counts(db, stocks, start, end), "charts": charts(audits, forecasts, report),
            "faithfulness": faith, "quality_flags": [*FLAGS, "uncited"], "lang": lang}


def quality_counts(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None) -> list[dict]:
    """Per model and kind of text (summary, forecast, retry, reflection): how many, and how many carry each flag."""
    out: dict[tuple[str, str], dict] = {}
    for kind in FLAGGED:
        for model, flags in stored_flags(db, kind, stocks, start, end):
            row = out.setdefault((model, kind), {"model": model, "kind": kind, "n": 0, "flagged": 0,
                                                  **{f: 0 for f in (*FLAGS, "uncited")}})
            row["n"] += 1
            found = flags.split(",") if flags else []
            row["flagged"] += bool(found)
            for f in found:
                row[f] = row.get(f, 0) + 1
    return sorted(out.values(), key=lambda r: (r["model"], r["kind"]))


def write_report(data: dict, out: Path) -> tuple[Path, Path]:
    """report.html and its JSON twin report.json (the charts are only in the page)."""
    from sep import report

    page = report.environment().get_template("audit.html.j2").render(**data)
    return report.write(out, page, {k: v for k, v in data.items() if k != "charts"})
