"""Summarize, Explain and Reflect agents (SEP), with summaries cached and reflections remembered.

Every prompt is built from a `DecisionWindow`, which holds only texts dated on or before D.
Reflections recalled from memory are those whose outcome was known by D (target day <= D).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlite_utils
from langchain_core.messages import AIMessage
from langchain_core.prompts import PromptTemplate

from sep.dedup import normalise_title
from sep.errors import TimeRuleError
from sep.llm import LABEL_WORDS, LLM, Answer, parse_answer
from sep.memory import now_iso, transaction
from sep.tradingdays import market_of
from sep.window import DecisionWindow, Text

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
MAX_TEXTS_PER_DAY = 40
MAX_TOKENS = {"summarize": 200, "explain": 160, "reflect": 120}


def lang_of(stock: str) -> str:
    """Korean prompts for KRX codes, English ones (SEP's setup) for other tickers."""
    return "ko" if market_of(stock) == "XKRX" else "en"


@dataclass(frozen=True)
class Prompt:
    name: str
    template: PromptTemplate
    version: str  # hash of the file: part of the summary cache key

    def render(self, **variables: str) -> str:
        return self.template.format(**variables)


def load_prompt(lang: str, name: str, prompts_dir: Path = PROMPTS_DIR) -> Prompt:
    path = prompts_dir / lang / f"{name}.txt"
    text = path.read_text(encoding="utf-8")
    return Prompt(name, PromptTemplate.from_template(text), hashlib.sha1(text.encode()).hexdigest()[:12])


def day_texts(texts: list[Text]) -> list[Text]:
    """The texts a summary reads: only representatives once `sep dedup` decided the day; exact repeats dropped; capped."""
    if any(t.representative is not None for t in texts):
        texts = [t for t in texts if t.representative == 1]
    seen, kept = set(), []
    for t in texts:
        key = normalise_title(t.title)
        if key and key not in seen:
            seen.add(key)
            kept.append(t)
    return kept[:MAX_TEXTS_PER_DAY]


def text_hash(texts: list[Text]) -> str:
    return hashlib.sha1("\n".join(f"{t.id}:{t.title}" for t in texts).encode()).hexdigest()[:16]


@dataclass
class Trial:
    trial: int
    label: str | None
    explanation: str
    confidence: float | None
    correct: bool
    response: str
    prompt: str
    reflection: str | None = None


@dataclass
class ReflectResult:
    window: DecisionWindow
    summaries: list[tuple[str, str]]
    recalled: list[str]
    trials: list[Trial] = field(default_factory=list)
    data_end: str | None = None  # the policy's last training day: on or before it the answer is in-sample

    def as_json(self) -> dict:
        last = self.trials[-1] if self.trials else None
        return {
            "stock": self.window.stock,
            "date": self.window.date,
            "target_day": self.window.target_day,
            "actual": self.window.label,
            "trials": [{k: v for k, v in asdict(t).items() if k in
                        ("label", "explanation", "confidence", "correct", "reflection")} for t in self.trials],
            "final": {"label": last.label, "correct": last.correct, "trials_used": len(self.trials)} if last else None,
            "forecast": {"label": self.trials[0].label, "correct": self.trials[0].correct} if self.trials else None,
            "in_sample": bool(self.data_end and self.window.date <= self.data_end),
        }


class Agents:
    """The three SEP agents over one memory and one LLM."""

    def __init__(self, db: sqlite_utils.Database, llm: LLM | None, lang: str, recall_k: int = 3,
                 prompts_dir: Path = PROMPTS_DIR, on_prompt: Callable[[str, str], None] | None = None,
                 retry_temperature: float = 0.7, seed: int = 0):
        self.db, self.llm, self.lang, self.recall_k = db, llm, lang, recall_k
        self.retry_temperature, self.seed = retry_temperature, seed
        self.prompts = {n: load_prompt(lang, n, prompts_dir) for n in ("summarize", "explain", "reflect")}
        self.words = LABEL_WORDS[lang]
        self.on_prompt = on_prompt  # sees every prompt before it is sent (dry runs print them)
        self.model_name = llm.name if llm else "dry-run"
        self.data_end = llm.data_end if llm else None  # a trained policy's last training day: in-sample on or before it

    def _ask(self, name: str, variables: dict, **kwargs) -> AIMessage | None:
        """Send one prompt (None in a dry run, which only shows it)."""
        prompt = self.prompts[name]
        if self.on_prompt:
            self.on_prompt(name, prompt.render(**variables))
        if self.llm is None:
            return None
        # A blank line ends every answer: small models otherwise run on into a new example.
        return self.llm.ask(prompt.template, variables, max_tokens=MAX_TOKENS[name], stop=["\n\n"], **kwargs)

    def stock_name(self, stock: str) -> str:
        row = self.db.execute("SELECT name FROM stocks WHERE stock = ?", [stock]).fetchone()
        return row[0] if row and row[0] else stock

    # ------------------------------------------------------------ summarize

    def summarize_day(self, stock: str, day: str, texts: list[Text]) -> str | None:
        """Factual points for one (stock, day); computed once per text set, model and prompt."""
        texts = day_texts(texts)
        if not texts:  # dedup kept nothing of this day (all repeats, spam or off-topic): nothing to ask
            return ""
        key = (stock, day, text_hash(texts), self.model_name, self.prompts["summarize"].version)
        row = self.db.execute(
            "SELECT summary FROM summaries WHERE stock=? AND date=? AND text_hash=? AND model=? AND prompt_version=?",
            list(key)).fetchone()
        if row:
            return row[0]
        variables = {"stock": stock, "name": self.stock_name(stock), "date": day,
                     "texts": "\n".join(f"- {t.title}" for t in texts)}
        message = self._ask("summarize", variables)
        if message is None:
            return None
        summary = str(message.content).strip() or "-"
        with transaction(self.db):
            self.db.execute(
                "INSERT OR IGNORE INTO summaries (stock, date, text_hash, n_texts, model, prompt_version, summary, "
                "created_at) VALUES (?,?,?,?,?,?,?,?)", [*key[:3], len(texts), *key[3:], summary, now_iso()])
        return summary

    def summaries(self, window: DecisionWindow) -> list[tuple[str, str]]:
        out = []
        for day, texts in window.texts_by_day().items():
            if day > window.date:
                raise TimeRuleError(f"time rule: a text of {day} reached the summarizer of a decision at {window.date}")
            summary = self.summarize_day(window.stock, day, texts)
            if summary == "":
                continue
            out.append((day, summary if summary is not None else "(dry run: summary not computed)"))
        return out

    # ------------------------------------------------------------ recall, explain, reflect

    def recall(self, window: DecisionWindow, summaries_text: str) -> list[str]:
        """The K past reflections for this stock most like today's information (outcome known by D)."""
        rows = self.db.execute(
            "SELECT reflection, date FROM reflections WHERE stock = ? AND target_day <= ? AND date < ? "
            "ORDER BY date DESC LIMIT 200", [window.stock, window.date, window.date]).fetchall()
        today = _bigrams(summaries_text)

        def relevance(row: tuple[str, str]) -> tuple[float, str]:
            grams = _bigrams(row[0])
            return len(today & grams) / (len(grams) or 1), row[1]  # overlap, then recency

        picked: list[str] = []
        for text, _ in sorted(rows, key=relevance, reverse=True):  # the same lesson twice teaches nothing new
            if text not in picked:
                picked.append(text)
            if len(picked) == self.recall_k:
                break
        return picked

    def explain_variables(self, window: DecisionWindow, summaries: list[tuple[str, str]],
                          reflections: list[str]) -> dict:
        summaries_text = "\n".join(f"[{d}] {' '.join(s.split())}" for d, s in summaries) or "(정보 없음)"
        if reflections:
            head = "과거의 반성:" if self.lang == "ko" else "Lessons from past mistakes:"
            block = head + "\n" + "\n".join(f"- {' '.join(r.split())}" for r in reflections) + "\n\n"
        else:
            block = ""
        return {"stock": window.stock, "name": self.stock_name(window.stock), "start": window.window_start,
                "date": window.date, "summaries": summaries_text, "reflections": block}

    def explain(self, variables: dict, **sampling: float | int) -> Answer | None:
        """One answer; `sampling` (temperature, seed) lets best-of-n draw different ones."""
        message = self._ask("explain", variables, label_words=(self.words["up"], self.words["down"]), **sampling)
        return None if message is None else parse_answer(message, self.lang)

    def reflect(self, variables: dict, answer: Answer, actual: str) -> str | None:
        message = self._ask("reflect", {**variables, "response": answer.response or "(빈 답)",
                                        "actual": self.words[actual]})
        return None if message is None else str(message.content).strip()

    # ------------------------------------------------------------ the loop

    def run(self, window: DecisionWindow, trials: int) -> ReflectResult:
        """Explain; while wrong and trials remain, reflect and retry. Stores every step."""
        summaries = self.summaries(window)
        base = self.explain_variables(window, summaries, [])
        recalled = self.recall(window, base["summaries"])
        result = ReflectResult(window, summaries, recalled, data_end=self.data_end)
        lessons = list(recalled)
        for n in range(trials):
            variables = self.explain_variables(window, summaries, lessons)
            # trial 0 is the forecast (greedy); a retry samples, so a lesson can change its mind
            answer = self.explain(variables) if n == 0 else \
                self.explain(variables, temperature=self.retry_temperature, seed=self.seed + n)
            if answer is None:  # dry run: the first prompt is all we can show
                break
            trial = Trial(n, answer.label, answer.explanation, answer.confidence, answer.label == window.label,
                          answer.response, self.prompts["explain"].render(**variables))
            result.trials.append(trial)
            if trial.correct:
                break
            if n + 1 < trials:
                trial.reflection = self.reflect(variables, answer, window.label)
                if trial.reflection and trial.reflection not in lessons:
                    lessons.append(trial.reflection)
        if self.llm is not None:
            self.store(result, self.prompts["explain"].render(**base))
        return result

    def store(self, result: ReflectResult, plain_prompt: str) -> None:
        """Predictions (one row per trial), reflections, and wrong→right pairs, in one transaction.

        Trial 0 is the forecast; later trials were told the outcome (hindsight) and only teach.
        """
        w, now = result.window, now_iso()
        with transaction(self.db):
            self.db.execute("DELETE FROM predictions WHERE stock = ? AND date = ? AND method = 'reflect' AND model = ?",
                            [w.stock, w.date, self.model_name])
            for t in result.trials:
                self.db.execute(
                    "INSERT INTO predictions (stock, date, trial, target_day, actual, label, explanation, confidence, "
                    "correct, response, prompt, model, created_at, data_end) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [w.stock, w.date, t.trial, w.target_day, w.label, t.label, t.explanation, t.confidence,
                     int(t.correct), t.response, t.prompt, self.model_name, now, self.data_end])
                if t.reflection:
                    self.db.execute(
                        "INSERT OR REPLACE INTO reflections (stock, date, target_day, trial, reflection, model, "
                        "created_at) VALUES (?,?,?,?,?,?,?)",
                        [w.stock, w.date, w.target_day, t.trial, t.reflection, self.model_name, now])
            for before, after in zip(result.trials, result.trials[1:]):
                if after.correct and not before.correct:
                    self.db.execute(
                        "INSERT OR IGNORE INTO pairs (stock, date, prompt, chosen, rejected, chosen_label, "
                        "rejected_label, model, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                        [w.stock, w.date, plain_prompt, after.response, before.response, after.label, before.label,
                         self.model_name, now])


def _bigrams(text: str) -> set[str]:
    s = re.sub(r"\s+", "", text)
    return {s[i : i + 2] for i in range(len(s) - 1)}


def export_pairs(db: sqlite_utils.Database, out: Path) -> int:
    """Write TRL's preference format (prompt/chosen/rejected JSON lines); return the count."""
    import json

    rows = db.execute("SELECT prompt, chosen, rejected, stock, date FROM pairs ORDER BY stock, date, id").fetchall()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for prompt, chosen, rejected, stock, date in rows:
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, "stock": stock,
                                "date": date}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return len(rows)
