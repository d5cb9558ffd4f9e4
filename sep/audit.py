"""Explanation audit: is each stored explanation consistent, grounded, and free of the future?

1. consistency: the stance of the words (bullish vs bearish lexicon) agrees with the label;
2. grounding: a claim (sentence) is grounded only through the texts of its own window: it shares
   enough content words with one of them, or with a summary point whose cited texts support that
   point. The model's own summary alone grounds nothing. Each claim lists the titles it rests on;
3. time: no date after D is mentioned (YYYY-MM-DD, YYYY.MM.DD, YYYY년 M월 D일, M월 D일, M/D);
4. judge (optional): the configured LLM scores relevance, clarity and consistency on 1-7.

The HTML report is rendered by jinja2 with autoescape (board titles are untrusted input), with
inline SVG charts (no scripts), and has a JSON twin for machines.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlite_utils

from sep.agents import cited_ids, strip_citations
from sep.evaluate import Decision, decisions, evaluate, once_per_interval
from sep.quality import content_words, dates_in
from sep.settings import default
from sep.window import decision_window

BULLISH = ["상승", "오를", "오르", "올라", "호재", "개선", "증가", "매수", "반등", "강세", "긍정", "기대", "상향", "회복",
           "positive", "rise", "gain", "bullish", "growth", "up"]
BEARISH = ["하락", "내릴", "내리", "떨어", "악재", "부진", "감소", "매도", "약세", "부정", "우려", "하향", "둔화", "위축",
           "negative", "fall", "drop", "bearish", "decline", "down"]
GROUNDED = 0.3  # share of a claim's content words found in one source
TEMPLATE_DIR = Path(__file__).with_name("templates")
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
        return out


def _lexicon_hits(text: str, lexicon: list[str]) -> int:
    """Korean stems count inside words (상승세, 오를 것); English words only whole ("up" is not in "support")."""
    low = text.lower()
    english = set(re.findall(r"[a-z]+", low))
    return sum(w in english if w.isascii() else low.count(w) for w in lexicon)


def stance(text: str) -> str:
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
    name = db.execute("SELECT name FROM stocks WHERE stock = ?", [d.stock]).fetchone()
    drop = content_words(f"{d.stock} {name[0] if name and name[0] else ''}")
    texts = {t.id: (t.title, content_words(t.title + " " + (t.body or ""), drop)) for t in w.texts}
    points = []
    for (summary,) in db.execute("SELECT summary FROM summaries WHERE stock = ? AND date >= ? AND date <= ?",
                                 [d.stock, w.window_start, d.date]):
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


# ---------------------------------------------------------------- charts (inline SVG, no scripts)


def _polyline(points: list[tuple[float, float]], width: int, height: int, lo: float, hi: float) -> str:
    if not points:
        return ""
    n = max(len(points) - 1, 1)
    span = (hi - lo) or 1.0
    return " ".join(f"{i / n * (width - 40) + 30:.1f},{height - 20 - (y - lo) / span * (height - 40):.1f}"
                    for i, (_, y) in enumerate(points))


def line_chart(series: dict[str, list[float]], title: str, width: int = 560, height: int = 220) -> dict:
    values = [v for ys in series.values() for v in ys] or [0.0]
    lo, hi = min(values + [0.0]), max(values + [0.0])
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    lines = [{"name": name, "color": colors[i % 3],
              "points": _polyline(list(enumerate(ys)), width, height, lo, hi)} for i, (name, ys) in enumerate(series.items())]
    return {"kind": "line", "title": title, "width": width, "height": height, "lines": lines, "lo": lo, "hi": hi}


def bar_chart(labels: list[str], values: list[float], title: str, width: int = 560, height: int = 220,
              diagonal: bool = False) -> dict:
    top = max(values + [1e-9]) if not diagonal else 1.0
    n = max(len(values), 1)
    bw = (width - 40) / n
    bars = [{"x": 30 + i * bw + 2, "w": bw - 4, "h": v / top * (height - 40), "y": height - 20 - v / top * (height - 40),
             "label": lab, "value": v} for i, (lab, v) in enumerate(zip(labels, values))]
    return {"kind": "bar", "title": title, "width": width, "height": height, "bars": bars, "diagonal": diagonal}


def charts(audits: list[Audit], ds: list[Decision], report: dict) -> list[dict]:
    """Charts of forecasts only: running accuracy, reliability of P(up) over [0, 1], its histogram, returns."""
    days = sorted({a.date for a in audits})
    by_day = {d: [a.correct for a in audits if a.date == d] for d in days}
    running, hits, n = [], 0, 0
    for d in days:
        hits += sum(by_day[d])
        n += len(by_day[d])
        running.append(hits / n)
    table = report["reliability"]
    labels = [f"{b['lo']:.1f}" for b in table]
    bt = report["backtest"]
    return [
        line_chart({"accuracy (running)": running}, "Accuracy over time (forecasts)"),
        bar_chart(labels, [b["freq_up"] or 0.0 for b in table], "Reliability: share of up closes per P(up) bin",
                  diagonal=True),
        bar_chart(labels, [float(b["n"]) for b in table], "Forecast P(up) histogram"),
        line_chart({"net": bt["net"]["curve"], "gross": bt["gross"]["curve"], "buy and hold": bt["buy_and_hold"]["curve"]},
                   "Cumulative return"),
    ]


def build(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None, *, window_days: int,
          llm=None, lang: str = "ko", seed: int = default("seed"), method: str | None = None, model: str | None = None) -> dict:
    """Audit the forecasts `sep eval` scores (the headline method and model, out of sample)."""
    report = evaluate(db, stocks, start, end, seed=seed, method=method, model=model)
    f = report["forecast"]
    forecasts = [d for d in once_per_interval(decisions(db, stocks, start, end, "forecast", method=f["method"],
                                                        model=f["model"])) if not d.in_sample]
    audits = [audit_one(db, d, window_days) for d in forecasts]
    if llm is not None:
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
    if llm is not None:
        scored = {k: [a.judge[k] for a in audits if a.judge and k in a.judge] for k in JUDGE_ASPECTS}
        summary["judge_mean"] = {k: sum(v) / len(v) if v else None for k, v in scored.items()}  # a missing score is not 0
        summary["judge_missing"] = {k: len(audits) - len(v) for k, v in scored.items()}
    return {"summary": summary, "evaluation": report, "audits": [a.as_json() for a in audits],
            "quality": quality_counts(db, stocks, start, end), "charts": charts(audits, forecasts, report)}


def quality_counts(db: sqlite_utils.Database, stocks: list[str], start: str | None, end: str | None) -> list[dict]:
    """Per model and kind of text (summary, forecast, retry, reflection): how many, and how many carry each flag."""
    from sep.quality import FLAGS

    marks = ",".join("?" * len(stocks))
    span, args = "", []
    if start:
        span, args = span + " AND date >= ?", args + [start]
    if end:
        span, args = span + " AND date <= ?", args + [end]
    queries = {
        "summary": "SELECT model, flags FROM summaries",
        "forecast": "SELECT model, flags FROM predictions WHERE trial = 0 AND",
        "retry": "SELECT model, flags FROM predictions WHERE trial > 0 AND",
        "reflection": "SELECT model, flags FROM reflections",
    }
    out: dict[tuple[str, str], dict] = {}
    for kind, sql in queries.items():
        sql += (" WHERE" if not sql.endswith("AND") else "") + f" stock IN ({marks}){span}"
        for model, flags in db.execute(sql, [*stocks, *args]).fetchall():
            row = out.setdefault((model, kind), {"model": model, "kind": kind, "n": 0, "flagged": 0,
                                                  **{f: 0 for f in (*FLAGS, "uncited")}})
            row["n"] += 1
            found = flags.split(",") if flags else []
            row["flagged"] += bool(found)
            for f in found:
                row[f] = row.get(f, 0) + 1
    return sorted(out.values(), key=lambda r: (r["model"], r["kind"]))


def write_report(data: dict, out: Path) -> tuple[Path, Path]:
    """report.html (jinja2, autoescaped) and its JSON twin report.json, each written atomically."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("audit.html.j2").render(**data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    twin = out.with_suffix(".json")
    for path, text in ((out, html), (twin, json.dumps({k: v for k, v in data.items() if k != "charts"},
                                                        ensure_ascii=False, indent=2))):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return out, twin
