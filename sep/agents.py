"""Summarize, Explain and Reflect agents (SEP), with summaries cached and reflections remembered.

Every prompt is built from a `DecisionWindow`, which holds only texts dated on or before D.
Reflections recalled from memory are those whose outcome was known by D (target day <= D).
Prompts are chat messages from files (`prompts/<lang>/<agent>.toml`, sep/prompts in a wheel): a system
message with the task and format, then the data. Every generation passes `sep.quality`'s checks
and is stored with its flags: a flagged summary is replaced by the extractive one, a flagged
reflection is never recalled, a flagged explanation counts as unparsable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlite_utils
from langchain_core.messages import AIMessage

from sep.dedup import normalise_title
from sep.errors import PromptTooLong, TimeRuleError
from sep.evidence import (MAX_EVIDENCE, MAX_TITLE_CHARS, bigrams, check_evidence, cited_points,
                          evidence_up_probability, extractive_points, judge_items, strip_citations, window_items,
                          window_stance)
from sep.guard import clean_for_prompt
from sep.llm import LLM, Answer, answered_probabilities, parse_answer
from sep.shapes import AnswerShape, LessonShape
from sep.mask import Masker
from sep.memory import (AlsoWrite, PairRow, PredictionRow, PredictionStore, ReflectionRow, SummaryRow, SummaryStore,
                        now_iso, stock_name)
from sep.prompting import PROMPTS_DIR, Prompt, literal_template, load_prompt, prompt_files, prompt_text  # noqa: F401
from sep.quality import GATE_VERSION, Check, concluded, join_asks, join_flags
from sep.settings import MAX_TOKENS, Settings, default
from sep.stances import StanceJudge, net_stance
from sep.window import AS_WRITTEN_SOURCES, LABEL_WORDS, DecisionWindow, Text, label_word, lang_of

MAX_TEXTS_PER_DAY = 40
MAX_DAY_CHARS = 5000   # one day's texts in a summary prompt (~2.5k tokens of Korean), well inside 4k-8k contexts
REASK_SEED = 1000  # a forecast's re-asks sample with seeds apart from the hindsight retries' (seed + trial)
CONTEXT_HINT = "SEP_CONTEXT for the embedded model, --max-model-len for vllm serve"


def day_texts(texts: list[Text]) -> list[Text]:
    """The texts a summary reads: only representatives once `sep dedup` decided the day; exact repeats
    dropped; at most MAX_TEXTS_PER_DAY and MAX_DAY_CHARS (each title cut to MAX_TITLE_CHARS), so one
    100 KB title or a flood of long posts cannot overflow the model's context."""
    if any(t.representative is not None for t in texts):
        texts = [t for t in texts if t.representative == 1]
    seen, kept, size = set(), [], 0
    for t in texts:
        key = normalise_title(t.title)
        if key and key not in seen:
            size += min(len(t.title), MAX_TITLE_CHARS) + 8
            if len(kept) == MAX_TEXTS_PER_DAY or (kept and size > MAX_DAY_CHARS):
                break
            seen.add(key)
            kept.append(t)
    return kept


def text_hash(texts: list[Text]) -> str:
    return hashlib.sha1("\n".join(f"{t.id}:{t.title}" for t in texts).encode()).hexdigest()[:16]


@dataclass
class Trial:
    trial: int
    label: str | None
    explanation: str
    confidence: float | None
    correct: bool                    # right label and no quality flag
    response: str
    prompt: str
    reflection: str | None = None
    flags: list[str] = field(default_factory=list)
    reflection_flags: list[str] = field(default_factory=list)
    reflection_detail: dict = field(default_factory=dict)  # misled (id), why, overlooked (id), the text as written
    evidence: list[dict] = field(default_factory=list)  # cited items: item, direction, note, day, point, texts
    attempts: int = 1  # asks it took (a forecast the gate flagged is asked again)
    asked_flags: list[list[str]] = field(default_factory=list)  # then each ask's flags, in order


@dataclass
class ReflectResult:
    window: DecisionWindow
    summaries: list[tuple[str, str]]
    recalled: list[str]
    trials: list[Trial] = field(default_factory=list)
    data_end: str | None = None  # the policy's last training day: on or before it the answer is in-sample
    summary_notes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (day, method, flags)
    window_stance: float | None = None  # derived: mean P(positive) - P(negative) of every item shown (no explanation)

    def as_json(self) -> dict:
        last = self.trials[-1] if self.trials else None
        return {
            "stock": self.window.stock,
            "date": self.window.date,
            "target_day": self.window.target_day,
            "actual": self.window.label,
            "summaries": [{"date": d, "summary": s, "method": m, "flags": f.split(",") if f else []}
                          for (d, s), (_, m, f) in zip(self.summaries, self.summary_notes)] if self.summary_notes
            else [{"date": d, "summary": s} for d, s in self.summaries],
            "actual_word": self.window.label_word,
            "trials": [{**{k: v for k, v in asdict(t).items() if k in
                           ("label", "explanation", "confidence", "correct", "reflection", "flags", "reflection_flags",
                            "reflection_detail", "evidence")}, "label_word": label_word(t.label, self.window.stock)}
                       for t in self.trials],
            "final": {"label": last.label, "correct": last.correct, "trials_used": len(self.trials)} if last else None,
            "forecast": {"label": self.trials[0].label, "correct": self.trials[0].correct} if self.trials else None,
            "in_sample": bool(self.data_end and self.window.date <= self.data_end),
            "window_stance": self.window_stance,
            "withheld": self.window.as_json()["withheld"],
        }


PUSH = {"up": "+", "down": "-"}  # the direction of an evidence line that argues for a label


def lesson_choices(answer: Answer, items: list[dict], actual: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ids a reflection may name as misleading (its cited items that argued for the wrong label:
    a "0" line or one arguing for the outcome fixed nothing), then those it may say it overlooked
    (the uncited items pointing to the outcome, when there are any; else every uncited one), as
    `LessonShape` takes them (`cited`, `ids`). Free to name any item, the default model named a "0"
    item as misleading in 7 of the sample's 17 reflections, and as overlooked an item pointing to
    the outcome in 6 of 17, though every window had some."""
    cited = tuple(dict.fromkeys(e["item"] for e in answer.evidence))
    misled = tuple(dict.fromkeys(e["item"] for e in answer.evidence
                                 if e.get("direction") == PUSH.get(answer.label or ""))) or cited
    sign = {x["item"]: x.get("sign") for x in items}  # one text's points share an id and its sign
    uncited = tuple(i for i in sign if i not in cited)
    missed = tuple(i for i in uncited if sign[i] == PUSH.get(actual))
    return misled, (*misled, *(missed or uncited))


def cued_kinds(text: str, kinds: Sequence[str], cues: Sequence[Sequence[str]]) -> list[str]:
    """The kinds whose cue patterns match the text most often (case-insensitive), or none when none
    match: the words a headline of each kind uses (점유율, 목표주가, price target) decide it before the
    model is asked."""
    hits = [sum(bool(re.search(c, text, flags=re.I)) for c in row) for row in cues]
    top = max(hits, default=0)
    return [k for k, n in zip(kinds, hits) if n == top] if top else []


class Agents:
    """The three SEP agents over one memory and one LLM."""

    def __init__(self, db: sqlite_utils.Database, llm: LLM | None, lang: str, recall_k: int = 3,
                 prompts_dir: Path | None = None, on_prompt: Callable[[str, str], None] | None = None,
                 retry_temperature: float = default("retry_temperature"), seed: int = default("seed"),
                 forecast_attempts: int = default("forecast_attempts"),
                 summarizer: str = default("summarizer"), summary_points: int = default("summary_points"),
                 explain_format: str = default("explain_format"), mask: bool = False,
                 lessons_before: str | None = None):
        self.db, self.llm, self.lang, self.recall_k = db, llm, lang, recall_k
        self.retry_temperature, self.seed, self.forecast_attempts = retry_temperature, seed, forecast_attempts
        self.summarizer, self.summary_points = summarizer, summary_points
        self.prompts = {agent: load_prompt(lang, file, prompts_dir) for agent, file in prompt_files(explain_format).items()}
        self.evidence_first = bool(self.prompts["explain"].label_after)
        # derived: each item's direction is judged first (the stance step), the label follows from the cited ones
        self.derived = explain_format == "derived"
        # one text at a time inside a decision: a Decider's pool judges a run's texts in parallel beforehand
        self.stances = StanceJudge(llm, prompts_dir=prompts_dir, db=db, concurrency=1) \
            if self.derived and llm is not None else None
        self.words = LABEL_WORDS[lang]
        self.on_prompt = on_prompt  # sees every prompt before it is sent (dry runs print them)
        self.model_name = llm.name if llm else "dry-run"
        self.summary_info: dict[tuple[str, str], tuple[str, str | None]] = {}  # (stock, day) -> (method, flags)
        self.data_end = llm.data_end if llm else None  # a trained policy's last training day: in-sample on or before it
        self.mask = mask  # the memorization probe: every prompt sent with the company and dates hidden (sep.mask)
        # a batch job recalls only lessons stored before it began: its days are decided in parallel (or in
        # offline stages), so a lesson written during the job would reach some days and not others
        self.lessons_before = lessons_before

    @classmethod
    def for_stock(cls, db: sqlite_utils.Database, llm: LLM | None, stock: str, cfg: Settings,
                  on_prompt: Callable[[str, str], None] | None = None, mask: bool = False,
                  lessons_before: str | None = None) -> "Agents":
        """The agents for one stock with every setting (prompts, summarizer, retries) from `cfg`."""
        return cls(db, llm, lang_of(stock), prompts_dir=cfg.prompts, on_prompt=on_prompt,
                   retry_temperature=cfg.retry_temperature, seed=cfg.seed, forecast_attempts=cfg.forecast_attempts,
                   summarizer=cfg.summarizer,
                   summary_points=cfg.summary_points, explain_format=cfg.explain_format, mask=mask,
                   lessons_before=lessons_before)

    def masker(self, stock: str) -> Masker | None:
        """How this stock's prompts are masked; None when they are not."""
        return Masker.for_company(self.lang, stock, self.stock_name(stock)) if self.mask else None

    def _ask(self, name: str, variables: dict, masker: Masker | None = None, **kwargs) -> AIMessage | None:
        """Send one prompt (None in a dry run, which only shows it); with a masker, the rendered chat
        (worked examples included) is masked before it is sent."""
        prompt = self.prompts[name]
        messages = masker.messages(prompt.messages(**variables)) if masker else None
        if self.on_prompt:
            self.on_prompt(name, prompt_text(json.dumps(messages, ensure_ascii=False) if masker
                                             else prompt.render(**variables)))
        if self.llm is None:
            return None
        over = self._over_budget(name, variables)
        if over:
            tokens, limit = over
            longest = max(variables, key=lambda k: len(str(variables[k])))
            raise PromptTooLong(
                f"The {name} prompt is {tokens:,} tokens but the model reads at most {limit:,} "
                f"({MAX_TOKENS[name]} of its {self.llm.context:,}-token context are kept for the answer); its longest "
                f"part is `{longest}` ({len(str(variables[longest])):,} characters): use fewer --window-days or a larger "
                f"context ({CONTEXT_HINT}).")
        if masker:
            return self.llm.ask(literal_template(messages), {}, max_tokens=MAX_TOKENS[name], agent=name, **kwargs)
        return self.llm.ask(prompt.template, variables, max_tokens=MAX_TOKENS[name], agent=name, **kwargs)

    def _over_budget(self, name: str, variables: dict) -> tuple[int, int] | None:
        """(tokens, limit) when the prompt and its answer would not fit the model's context, by its tokenizer."""
        if self.llm is None or not self.llm.context or self.llm.count_tokens is None:
            return None
        limit = self.llm.context - MAX_TOKENS[name] - 8  # 8: the constrained label of an explanation
        tokens = self.llm.prompt_tokens_of(self.prompts[name].template, variables)
        return (tokens, limit) if tokens is not None and tokens > limit else None

    def _summary_variables(self, stock: str, day: str, texts: list[Text]) -> dict:
        titles = [clean_for_prompt(t.title)[:MAX_TITLE_CHARS] for t in texts]
        return {"stock": stock, "name": self.stock_name(stock), "company": self.company(stock), "date": day,
                "max_points": self.summary_points,
                "texts": "\n".join(f"[{i}] {title}" for i, title in enumerate(titles, 1))}

    def fit_texts(self, stock: str, day: str, texts: list[Text]) -> list[Text]:
        """The day's texts cut from the end until the summary prompt fits the model's
        context, measured with its tokenizer; one text that cannot fit is an error naming it."""
        while texts:
            over = self._over_budget("summarize", self._summary_variables(stock, day, texts))
            if not over:
                return texts
            tokens, limit = over
            if len(texts) == 1:
                t = texts[0]
                raise PromptTooLong(
                    f"Text {t.id} of {stock} on {day} (\"{' '.join(t.title.split())[:40]}…\") alone makes a "
                    f"{tokens:,}-token summary prompt; the model reads at most {limit:,}: give it a larger context "
                    f"({CONTEXT_HINT}).")
            texts = texts[: max(1, min(len(texts) - 1, len(texts) * limit // tokens))]
        return texts

    def stock_name(self, stock: str) -> str:
        return stock_name(self.db, stock)

    def company(self, stock: str) -> str:
        """'삼성전자(005930)' when the name is known, else the code."""
        name = self.stock_name(stock)
        return f"{name}({stock})" if name != stock else stock

    # ------------------------------------------------------------ summarize

    def summarize_day(self, stock: str, day: str, texts: list[Text]) -> str | None:
        """Cited factual points for one (stock, day); computed once per text set, model and prompt.

        The model's points must cite texts of the day and pass the quality gate; otherwise the
        extractive points are stored instead, with the flags of the failed attempt.
        """
        texts = day_texts(texts)
        if not texts:  # dedup kept nothing of this day (all repeats, spam or off-topic): nothing to ask
            return ""
        prompt = self.prompts["summarize"]
        extractive = self.summarizer == "extractive" or (
            self.summarizer == "auto" and all(t.source in AS_WRITTEN_SOURCES for t in texts))
        if not extractive:
            texts = self.fit_texts(stock, day, texts)
        # the model's name, not its server's URL: moving a server must not recompute every summary
        model = "extractive" if extractive else self.model_name.split("@", 1)[0]
        # the gate's version too: a summary an older gate passed is checked again by the new one; an
        # extractive one's order ("-o": tweets that name only other stocks last)
        version = f"extractive-o-p{self.summary_points}" if extractive else \
            f"{prompt.version}-p{self.summary_points}-g{GATE_VERSION}" + ("-masked" if self.mask else "")
        key = (stock, day, text_hash(texts), model, version)
        cached = SummaryStore(self.db).get(*key)
        if cached:
            self.summary_info[(stock, day)] = (cached.method, cached.flags)
            return cached.summary
        flags: list[str] = []
        points: list[str] = []
        response = None
        if not extractive:
            titles = [clean_for_prompt(t.title)[:MAX_TITLE_CHARS] for t in texts]
            variables = self._summary_variables(stock, day, texts)
            masker = (m := self.masker(stock)) and m.for_day(day)
            message = self._ask("summarize", variables, masker)
            if message is None:
                return None
            response = str(message.content).strip()
            inputs = masker.text("\n".join(titles)) if masker else "\n".join(titles)  # what the model was shown
            flags = self.check(prompt, variables, inputs, day, day, kind="summary").flags(response)
            points = cited_points(response, texts, self.summary_points)
            if not points:
                flags.append("uncited")
        method, attempt = "model", None
        if flags or not points:
            method, attempt, points = "extractive", response, extractive_points(texts, self.summary_points, stock)
        summary = "\n".join(points)
        self.summary_info[(stock, day)] = (method, join_flags(flags))
        SummaryStore(self.db).put(SummaryRow(*key[:3], len(texts), *key[3:], summary, now_iso(), method,
                                             join_flags(flags), attempt))
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

    def check(self, prompt: Prompt, variables: dict, inputs: str, first_day: str, last_day: str,
              echo_of: str = "", kind: str = "", lessons: tuple[str, ...] = ()) -> Check:
        """The quality gate for one generation: not the prompt's instructions (nor mostly `echo_of`),
        about its inputs, in its window; an explanation's item reasons not pasted from `lessons`."""
        return Check(prompt.instructions(**variables), inputs, first_day, last_day, echo_of, kind, lessons=lessons)

    # ------------------------------------------------------------ recall, explain, reflect

    def recall(self, window: DecisionWindow, summaries_text: str) -> list[str]:
        """The K past clean reflections for this stock most like today's information (outcome known by D)."""
        rows = PredictionStore(self.db).lessons(window.stock, window.date, self.lessons_before)
        today = bigrams(summaries_text)

        def relevance(row: tuple[str, str]) -> tuple[float, str]:
            grams = bigrams(row[0])
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
        """The explain prompt's variables. Evidence first shows every point of the window under its
        day with the id of the text it rests on ([t57]), so an answer can cite it; `_items` maps
        each shown id to its day, point and texts (two points of one text share its id)."""
        none = "(정보 없음)" if self.lang == "ko" else "(no information)"
        items = window_items(summaries)
        if self.derived:
            judge_items(self.stances, items, self.lang)
        if self.evidence_first:
            lines, last = [], None
            for item in items:
                if item["day"] != last:
                    lines.append(f"[{item['day']}]")
                    last = item["day"]
                mark = f"({item['sign']}) " if "sign" in item else ""
                lines.append(f"[{item['item']}] {mark}{' '.join(item['point'].split())}")
            summaries_text = "\n".join(lines) or none
        else:
            summaries_text = "\n".join(f"[{d}] {' '.join(strip_citations(s).split())}" for d, s in summaries) or none
        if reflections:
            head = "과거의 반성:" if self.lang == "ko" else "Lessons from past mistakes:"
            block = "\n" + head + "\n" + "\n".join(f"- {' '.join(r.split())}" for r in reflections) + "\n"
        else:
            block = ""
        return {"stock": window.stock, "name": self.stock_name(window.stock), "company": self.company(window.stock),
                "start": window.window_start, "date": window.date, "summaries": summaries_text, "reflections": block,
                "_items": items, "_lessons": tuple(reflections)}

    def explain(self, variables: dict, **sampling: float | int) -> Answer | None:
        """One answer, checked; `sampling` (temperature, seed) lets best-of-n draw different ones."""
        prompt = self.prompts["explain"]
        signs = tuple(dict.fromkeys((i["item"], i["sign"]) for i in variables["_items"] if "sign" in i))
        weights = tuple(dict.fromkeys((i["item"], net_stance(i["stance"])) for i in variables["_items"] if "stance" in i))
        masker = (m := self.masker(variables["stock"])) and \
            m.for_window([variables["start"], *(i["day"] for i in variables["_items"])], variables["date"])
        # a derived line is its item's words as the prompt showed them (masked, if the prompt was)
        quotes = tuple((i["item"], masker.text(i["point"]) if masker else i["point"]) for i in variables["_items"]) \
            if signs else ()
        shape = AnswerShape(self.words["up"], self.words["down"], prompt.label_after, prompt.evidence_head,
                            tuple(dict.fromkeys(item["item"] for item in variables["_items"])), MAX_EVIDENCE, signs,
                            quotes=quotes, weights=weights)
        message = self._ask("explain", variables, masker, shape=shape, **sampling)
        if message is None:
            return None
        answer = parse_answer(message, self.lang, prompt.label_after)
        inputs = variables["summaries"] + variables["reflections"]
        check = self.check(prompt, variables, masker.text(inputs) if masker else inputs,
                           variables["start"], variables["date"], kind="explanation", lessons=variables["_lessons"])
        answer.flags = check.flags(answer.explanation)
        if answer.label and concluded(answer.explanation) not in (None, answer.label):
            answer.flags.append("reason_mismatch")  # the reasons forecast the other way
        if self.evidence_first:
            answer.flags += [f for f in check_evidence(answer, variables["_items"], check) if f not in answer.flags]
        if self.derived and answer.label:  # the confidence is the cited evidence's, not the label token's
            p_up = evidence_up_probability(answer.evidence)
            answer.confidence = None if p_up is None else p_up if answer.label == "up" else 1 - p_up
        return answer

    def forecast(self, variables: dict) -> Answer | None:
        """The forecast: greedy, and while the quality gate flags it, asked again, sampled, up to
        `forecast_attempts` asks in all. No ask is told the outcome, so whichever is kept is still a
        forecast; the gate uses no outcome either. The first clean answer is kept, else the greedy one
        (withheld). Resampling against a check, not against the market: it lifts coverage, not skill."""
        first = answer = self.explain(variables)
        asked = [] if answer is None else [list(answer.flags)]
        while answer is not None and answer.flags and len(asked) < self.forecast_attempts:
            answer = self.explain(variables, temperature=self.retry_temperature,
                                  seed=self.seed + REASK_SEED + len(asked))
            asked.append(list(answer.flags) if answer is not None else [])
        if answer is not None and answer.flags:
            answer = first
        if answer is not None:
            answer.attempts = len(asked)
            answer.asked_flags = asked  # why it was asked again (stored only when it was: join_asks)
        return answer

    def reflect(self, variables: dict, answer: Answer, actual: str) -> tuple[str, list[str], dict] | None:
        """A lesson from a wrong answer, its quality flags (a flagged lesson is kept but never used) and
        its detail. An answer that cited evidence gets three lines, held by the backend: the cited item
        that misled and why (direction or weight), the item overlooked, and one general lesson, the
        only part recalled later; the gate flags a lesson that names an id, a date, the company or a
        label word (`specific`) or answers again (`reanswer`)."""
        empty = "(빈 답)" if self.lang == "ko" else "(empty answer)"
        values = {**variables, "response": answer.response or empty, "actual": self.words[actual]}
        prompt = self.prompts["reflect"]
        shape, templates = None, None
        if prompt.lesson:
            cited, ids = lesson_choices(answer, variables["_items"], actual)
            templates = prompt.lesson.get("templates")  # the model picks the kind of news; the rule is fixed
            shape = LessonShape(tuple(prompt.lesson["markers"]), tuple(prompt.lesson["reasons"]),
                                str(prompt.lesson["none"]), cited, ids,
                                kinds=tuple(prompt.lesson.get("kinds", ())) if templates else ())
        message = self._ask("reflect", values, shape=shape) if shape else self._ask("reflect", values)
        if message is None:
            return None
        text = str(message.content).strip()
        detail = shape.parse(text) if shape else {"lesson": text}
        lesson = detail.pop("lesson")
        if shape and templates and detail.get("why") in shape.reasons:
            misled = next((i["point"] for i in variables["_items"] if i["item"] == detail["misled"]), None)
            detail["kind_said"] = lesson.strip()  # the reflection's own last line: first-in-list biased
            detail["kind"], detail["kind_p"] = self.news_kind(misled, shape.kinds, prompt.lesson.get("hints", ()),
                                                              prompt.lesson.get("cues", ())) \
                if misled else (lesson.strip(), None)
            lesson = templates[shape.reasons.index(detail["why"])].format(kind=detail["kind"])
        explain = self.prompts["explain"]
        # a lesson that mostly repeats the wrong answer teaches nothing
        check = Check(prompt.instructions(**values), variables["summaries"] + "\n" + answer.response,
                      variables["start"], variables["date"], echo_of=answer.response,
                      kind="lesson" if shape else "reflection",
                      names=Masker.for_company(self.lang, variables["stock"], variables["name"]).aliases,
                      labels=tuple(self.words.values()),
                      markers=tuple(m for m in (explain.label_after, explain.evidence_head) if m))
        flags = check.flags(lesson)
        if shape and detail.get("misled") and not any(i["item"] == detail["misled"] for i in variables["_items"]):
            flags.append("no_evidence")  # it blames what the window never showed (t0 on an empty one): a lesson of nothing
        return lesson, flags, {**detail, "response": text} if shape else {}

    def retry_hint(self, detail: dict) -> str | None:
        """What the same day's retry is told beside the lesson: the item that misled it (and why) and the
        one it overlooked, by id. The general lesson alone named neither, and a derived label changes only
        when other items are cited: on the sample's training days, 12 retries of 4 wrong days kept citing
        good news and made no pair. A retry is hindsight, so it may be told; a later day never is."""
        lesson = self.prompts["reflect"].lesson
        reasons = tuple(lesson.get("reasons", ()))
        if not lesson.get("retry") or detail.get("why") not in reasons or not detail.get("misled"):
            return None
        hint = lesson["retry"][reasons.index(detail["why"])].format(misled=detail["misled"])
        if detail.get("overlooked") and lesson.get("retry_overlooked"):  # an id, or None for "없음"
            hint += " " + str(lesson["retry_overlooked"]).format(overlooked=detail["overlooked"])
        return hint

    def news_kind(self, text: str, kinds: Sequence[str], hints: Sequence[str] = (),
                  cues: Sequence[Sequence[str]] = ()) -> tuple[str, float | None]:
        """The kind of one news item (a lesson's {kind}) and the model's probability of it. When one
        kind's `cues` match the item's words most, that kind is taken and the model is not asked
        (probability None); several tied are asked among themselves, none among all kinds. The model's
        choice is read from the log-probs of each kind's first token, with a line saying what each kind
        means (`hints`). Named on the reflection's last line instead, the kind was the list's first 7
        times in 10 (issue 31); asked for the item alone, with hints, it named 주가 흐름 for most
        headlines (docs/agents.md has the held-out figures)."""
        candidates = cued_kinds(text, kinds, cues)
        if len(candidates) == 1:
            return candidates[0], None
        probs = self._kind_probabilities(text, kinds, hints)
        allowed = [kinds.index(k) for k in candidates] or range(len(kinds))
        best = max(allowed, key=probs.__getitem__)
        return kinds[best], round(probs[best], 4)

    def _kind_probabilities(self, text: str, kinds: Sequence[str], hints: Sequence[str] = ()) -> list[float]:
        lines = "\n".join(f"- {k}: {h}" for k, h in zip(kinds, hints))
        message = self._ask("kind", {"text": " ".join(text.split()), "kinds": ", ".join(kinds), "hints": lines},
                            shape=AnswerShape.choice(*kinds))
        return answered_probabilities(message, kinds)

    # ------------------------------------------------------------ the loop

    def run(self, window: DecisionWindow, trials: int, *, save: bool = True,
            also: AlsoWrite | None = None) -> ReflectResult:
        """Explain; while wrong and trials remain, reflect and retry. Stores every step (`save`; a
        pre-registered forecast is stored by the ledger instead), with `also` in the same transaction."""
        summaries = self.summaries(window)
        base = self.explain_variables(window, summaries, [])
        recalled = self.recall(window, base["summaries"])
        result = ReflectResult(window, summaries, recalled, data_end=self.data_end,
                               summary_notes=[(d, *self.summary_info.get((window.stock, d), ("model", None)))
                                              for d, _ in summaries], window_stance=window_stance(base["_items"]))
        lessons = list(recalled)
        for n in range(trials):
            variables = self.explain_variables(window, summaries, lessons)
            # trial 0 is the forecast (greedy); a retry samples, so a lesson can change its mind
            answer = self.forecast(variables) if n == 0 else \
                self.explain(variables, temperature=self.retry_temperature, seed=self.seed + n)
            if answer is None:  # dry run: the first prompt is all we can show
                break
            trial = Trial(n, answer.label, answer.explanation, answer.confidence,
                          answer.label == window.label and not answer.flags, answer.response,
                          self.prompts["explain"].render(**variables), flags=answer.flags, evidence=answer.evidence,
                          attempts=answer.attempts, asked_flags=answer.asked_flags)
            result.trials.append(trial)
            if trial.correct:
                break
            if n + 1 < trials:
                reflected = self.reflect(variables, answer, window.label)
                if reflected:
                    trial.reflection, trial.reflection_flags, trial.reflection_detail = reflected
                    if trial.reflection and not trial.reflection_flags and trial.reflection not in lessons:
                        lessons.append(trial.reflection)
                    hint = self.retry_hint(trial.reflection_detail)
                    if hint and hint not in lessons:  # this day's retries only: never stored, never recalled
                        lessons.append(hint)
        if self.llm is not None and save:
            self.store(result, self.prompts["explain"].render(**base), also)
        return result

    def store(self, result: ReflectResult, plain_prompt: str,
              also: AlsoWrite | None = None) -> None:
        """Predictions (one row per trial), reflections, and wrong→right pairs, in one transaction.

        Trial 0 is the forecast; later trials were told the outcome (hindsight) and only teach.
        """
        w, now = result.window, now_iso()
        predictions = [PredictionRow(
            w.stock, w.date, t.trial, w.target_day, w.label, t.label, t.explanation, t.confidence, t.correct, t.response,
            t.prompt, self.model_name, now, flags=join_flags(t.flags),
            evidence=json.dumps(t.evidence, ensure_ascii=False) if t.evidence else None, data_end=self.data_end,
            window_stance=result.window_stance, attempts=t.attempts,
            asked_flags=join_asks(t.asked_flags)) for t in result.trials]
        reflections = [ReflectionRow(
            w.stock, w.date, w.target_day, t.trial, t.reflection, self.model_name, now, join_flags(t.reflection_flags),
            json.dumps(t.reflection_detail, ensure_ascii=False) if t.reflection_detail else None)
            for t in result.trials if t.reflection]
        pairs = [PairRow(w.stock, w.date, plain_prompt, after.response, before.response, after.label, before.label,
                         self.model_name, now)
                 for before, after in zip(result.trials, result.trials[1:]) if after.correct and not before.correct]
        PredictionStore(self.db).save(predictions, reflections, pairs, also)

def export_pairs(db: sqlite_utils.Database, out: Path) -> int:
    """Write TRL's conversational preference format (prompt: the chat messages; chosen, rejected:
    one assistant message each) as JSON lines; return the count."""
    import json

    from sep.llm import as_messages

    rows = PredictionStore(db).pairs()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for prompt, chosen, rejected, stock, date in rows:
            f.write(json.dumps({"prompt": as_messages(prompt), "chosen": [{"role": "assistant", "content": chosen}],
                                "rejected": [{"role": "assistant", "content": rejected}], "stock": stock,
                                "date": date}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return len(rows)
