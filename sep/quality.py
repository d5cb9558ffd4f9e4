"""The quality gate every generated text passes before it is trusted: summaries, explanations, reflections.

Small models fail in recognisable ways: they copy the prompt's instructions or example, write
about something no input mentions, invent dates, or loop. Each check returns a flag name; a
text with any flag is stored with its flags and never used as if it were good (a flagged
explanation counts as unparsable in `sep eval`, a flagged summary falls back to the extractive
one, a flagged reflection is never recalled).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date as Date

FLAGS = ("copied", "ungrounded", "invented_dates", "invented_numbers", "degenerate", "pasted", "fused",
         "stance_mismatch", "reason_mismatch", "unknown_citation", "repeated_citation", "no_evidence",
         "echoed_lesson", "specific", "reanswer")
GATE_VERSION = 4  # bump when a check changes what passes: cached summaries are then made and checked again
COPY_RUN = 8  # a run of this many words shared with the instructions is a copy
PASTE_RUN, PASTE_SHARE = 5, 0.5  # an explanation half made of 5-word runs of its inputs restates, it does not reason

_WORD = re.compile(r"[가-힣]+|[A-Za-z]+|\d+(?:[.,]\d+)*")
# Words any stock text may use without reading its inputs: they never prove grounding.
_GENERIC = set("""
상승 하락 주가 종가 전망 예상 가능성 투자 투자자 시장 영향 다음 거래일 이는 있다 있어 있는 있을 것으로 것이다
수 및 등 또한 그러나 하지만 따라서 때문에 대한 관련 정보 요약 사실 없음 긍정적 부정적 단기 심리 투자심리 기대
positive negative the a an and or of to in on for is are be will was were this that it its stock price next day
close market investors likely may could would with as by at from
""".split())
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)((?:19|20)\d{2})[-./]\s?(\d{1,2})[-./]\s?(\d{1,2})(?!\d)"),
    re.compile(r"((?:19|20)\d{2})년\s*(\d{1,2})월\s*(\d{1,2})일"),
)
_MONTH_DAY = re.compile(r"(?<!\d)(\d{1,2})월\s*(\d{1,2})일")
_SLASH_DAY = re.compile(r"(?<![\d./-])(\d{1,2})/(\d{1,2})(?![\d/])")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text or "")]


_ENDINGS = sorted("""이 가 은 는 을 를 의 에 와 과 도 만 로 으로 에서 에게 까지 부터 보다 처럼 이다 였다 했다 한다 하고 하며
된다 됐다 되고 이라는 라는 이며 에도 과의 와의 이고""".split(), key=len, reverse=True)


def stem(word: str) -> str:
    """A Korean word without a trailing particle or ending (외국인이 → 외국인, 순매도했다 → 순매도)."""
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 2:
            return word[: -len(ending)]
    return word


def copied_share(text: str, source: str, run: int = COPY_RUN) -> float:
    """The share of `text`'s words that lie in runs of `run` or more words also found in `source`."""
    out, ref = words(text), words(source)
    if len(out) < run or len(ref) < run:
        return 0.0
    grams = {tuple(ref[i:i + run]) for i in range(len(ref) - run + 1)}
    covered = set()
    for i in range(len(out) - run + 1):
        if tuple(out[i:i + run]) in grams:
            covered.update(range(i, i + run))
    return len(covered) / len(out)


def copied(text: str, instructions: str, run: int = COPY_RUN) -> bool:
    """True when `text` shares a run of `run` or more words with the prompt's own instructions/example."""
    return copied_share(text, instructions, run) > 0


def grounded(text: str, inputs: str) -> bool:
    """True when some content word of `text` (not a generic market word) begins a word of its inputs."""
    prefixes = {w[:i] for w in words(inputs) for i in range(2, len(w) + 1)}
    for w in words(text):
        if w in _GENERIC or len(w) < 2 or w.isdigit():
            continue
        if stem(w) in prefixes and stem(w) not in _GENERIC:
            return True
    return False


def dates_in(text: str, year: int | None = None) -> list[str]:
    """ISO days a text names: full dates (2022-06-02, 2022.6.2, 2022년 6월 2일) and, given the
    year they are read in, month-days (6월 2일, 6/2). Impossible dates are skipped."""
    found: list[tuple[int, int, int]] = []
    for pattern in _DATE_PATTERNS:
        found += [(int(y), int(m), int(d)) for y, m, d in pattern.findall(text or "")]
    if year is not None:
        rest = text or ""
        for pattern in _DATE_PATTERNS:
            rest = pattern.sub(" ", rest)
        found += [(year, int(m), int(d)) for m, d in _MONTH_DAY.findall(rest)]
        found += [(year, int(m), int(d)) for m, d in _SLASH_DAY.findall(rest)]
    out = []
    for y, m, d in found:
        try:
            out.append(Date(y, m, d).isoformat())
        except ValueError:
            continue
    return out


def content_words(text: str, drop: set[str] = frozenset()) -> set[str]:
    """Stemmed words that carry content (no generic market words, no bare numbers, none of `drop`)."""
    out = {stem(w) for w in words(text) if len(w) >= 2 and w not in _GENERIC and not w.isdigit()}
    return {w for w in out if w not in _GENERIC} - drop


def invented_dates(text: str, first: str, last: str) -> list[str]:
    """Full dates in `text` outside the window [first, last] (ISO strings)."""
    return sorted({d for d in dates_in(text) if not first <= d <= last})


REPEAT_RUN = 8  # words: a run this long said twice is a sentence said again, not a shared phrase


def degenerate(text: str) -> bool:
    """Empty, looping or repeating text: a line or a 4-word run said three times, an 8-word run said
    twice (two "sentences" that are one: "…하나로, 삼성전자는 이 기술을 개발하고 있습니다. 또한, 삼성전자는
    …하나로, 삼성전자는 이 기술을 개발하고 있습니다."), or few distinct words."""
    ws = words(text)
    if not ws:
        return True
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and Counter(lines).most_common(1)[0][1] >= 3:
        return True
    grams = Counter(tuple(ws[i:i + 4]) for i in range(len(ws) - 3))
    if grams and grams.most_common(1)[0][1] >= 3:
        return True
    runs = Counter(tuple(ws[i:i + REPEAT_RUN]) for i in range(len(ws) - REPEAT_RUN + 1))
    if runs and runs.most_common(1)[0][1] >= 2:
        return True
    return len(ws) >= 12 and len(set(ws)) / len(ws) < 0.35


# ---------------------------------------------------------------- numbers

_KO_UNIT = {"조": 1e12, "억": 1e8, "만": 1e4}
_KO_SMALL = {"천": 1e3, "백": 1e2}
_EN_SCALE = {"trillion": 1e12, "billion": 1e9, "bn": 1e9, "million": 1e6, "mn": 1e6, "thousand": 1e3}
_NUMBER = re.compile(r"\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_AFTER = re.compile(r"\s?(천|백)?\s?(조|억|만)?")  # matches always (every part optional)
_AFTER_EN = re.compile(r"\s?(trillion|billion|bn|million|mn|thousand)\b|\s?(%|퍼센트|percent)", re.I)
# what is not a stated number: citations [1, 3] / [t123], list markers, an evidence item's [n]
_NOT_NUMBERS = (re.compile(r"\[\s*t?\d+(?:\s*[,，]\s*t?\d+)*\s*\]"), re.compile(r"(?m)^\s*\d+[.)]\s"),
                re.compile(r"\bt\d+\b"))


@dataclass(frozen=True)
class Number:
    """A number as written, normalised: 14조1000억 → 1.41e13, 1.1조원 → 1.1e12, 6만원 → 6e4, 13% → 13."""

    text: str
    value: float
    scaled: bool  # an amount with a unit or a percentage: may be rounded (14조 for 14조1000억), a bare number may not

    @property
    def significant(self) -> int:
        digits = f"{self.value:.15g}".split("e")[0].replace(".", "").lstrip("0").rstrip("0")
        return max(1, len(digits))


def numbers_in(text: str) -> list[Number]:
    """Every number a text states, Korean and English amounts and percentages normalised."""
    text = text or ""
    for pattern in _NOT_NUMBERS:
        text = pattern.sub(" ", text)
    out: list[Number] = []
    end_of_amount, last_unit = -2, 0.0  # where the last 조/억/만 part ended, and its unit: 14조 1000억 is one amount
    for m in _NUMBER.finditer(text):
        value = float(m.group().replace(",", ""))
        ko = _AFTER.match(text, m.end())
        small, unit, end = ko.group(1), ko.group(2), ko.end()
        if small:
            value *= _KO_SMALL[small]
        if unit:
            value *= _KO_UNIT[unit]
        scaled = bool(small or unit)
        en = _AFTER_EN.match(text, end)
        if en and not scaled:
            value *= _EN_SCALE.get((en.group(1) or "").lower(), 1.0)
            scaled, end = True, en.end()
        # the rest of a compound amount: a smaller unit (14조 1000억), or a bare remainder below the last unit
        # that ends the amount (6만 5000원, 6만5000); a year after an amount (1000억 2017년) stays its own number
        rest = (unit and _KO_UNIT[unit] < last_unit) or (
            not unit and value < last_unit and (m.start() == end_of_amount or text.startswith("원", end)))
        if out and m.start() - end_of_amount <= 1 and rest:
            prev = out.pop()
            value, scaled = prev.value + value, True
            start = text.rfind(prev.text, 0, m.start())
            out.append(Number(text[start:end].strip(), value, scaled))
        else:
            out.append(Number(text[m.start():end].strip(), value, scaled))
        end_of_amount, last_unit = (end, _KO_UNIT[unit]) if unit else (-2, 0.0)
    return out


def _rounded(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def invented_numbers(text: str, inputs: str, known: set[float] = frozenset()) -> list[str]:
    """Numbers in `text` that none of its inputs holds (nor `known`, e.g. the window's dates);
    an amount or percentage may round one (14조 for 14조1000억), a bare number must match."""
    have = numbers_in(inputs)
    values = {n.value for n in have} | set(known)
    out = []
    for n in numbers_in(text):
        if n.value in values:
            continue
        if n.scaled and any(h.scaled and _rounded(h.value, n.significant) == n.value for h in have):
            continue
        out.append(n.text)
    return out


def date_numbers(*days: str) -> set[float]:
    """The year, month and day of each ISO day: an output may name its own window."""
    return {float(part) for day in days if day for part in day.split("-")}


# ---------------------------------------------------------------- pasted and fused

def pasted(text: str, inputs: str) -> bool:
    """Mostly its inputs verbatim: half its words lie in runs of PASTE_RUN words the inputs hold."""
    return copied_share(text, inputs, PASTE_RUN) >= PASTE_SHARE


_MIXED = re.compile(r"[가-힣][A-Za-z]+|[A-Za-z]+[가-힣]")
_PARTICLE = set("의이가은는을를와과도에로만")  # LG의, AI가: a particle after a Latin word joins nothing
_TAG = re.compile(r"[\[【]([^\]】\n]*)(?:[\]】]|$)", re.M)  # [강경주의 IT세상], or one cut short: [비즈3...
# a point that talks about the text instead of stating its fact
_META = re.compile(r"에 대해 (?:설명|다루|이야기|소개)|(?:설명|소개|이야기)합니다|다룹니다|다루고 있습니다|기사입니다"
                   r"|\b(?:this|the) (?:article|headline|text|post)s?\b", re.I)


def fused(point: str, sources: str) -> str | None:
    """Why a summary point is neither a faithful shortening of its texts nor its own sentence, or None.

    - a corrupted word: letters of two scripts joined in a way no source writes (삼성·인TEL for 인텔);
    - a byline or series tag woven into the sentence (강경주의 from a title's "[강경주의...");
    - talk about the text instead of its fact ("…에 대해 설명합니다").
    """
    low = sources.lower()
    for chunk in _MIXED.findall(point):
        if chunk[-1] in _PARTICLE and chunk[0].isascii():
            continue
        if chunk.lower() not in low:
            return f"corrupted word {chunk!r}"
    outside = _TAG.sub(" ", sources)
    tag_words = {stem(w) for seg in _TAG.findall(sources) for w in words(seg) if len(w) >= 2 and not w.isdigit()}
    tag_words -= {stem(w) for w in words(outside)}
    for w in words(_TAG.sub(" ", point)):  # a tag the point keeps in brackets is quoted, not woven
        if len(w) >= 2 and stem(w) in tag_words:
            return f"tag word {w!r}"
    found = _META.search(point)
    return f"talks about the text ({found.group()!r})" if found else None


_POINT_LINE = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s*(.+)$", re.M)


# ---------------------------------------------------------------- lessons

def _near(a: str, b: str) -> bool:
    """One word is the other with more attached (창의 / 창의적인, 근거 / 근거로): both stems, two letters or more."""
    a, b = stem(a), stem(b)
    return len(a) >= 2 and len(b) >= 2 and (a.startswith(b) or b.startswith(a))


def echoed_lesson(note: str, point: str, lessons: tuple[str, ...]) -> bool:
    """True when a cited item's reason is mostly a recalled lesson's words, not its item's: at least
    two of its words, and half of them, come from a lesson and not from the item it cites. A lesson
    should change which items weigh; pasted into each item's reason ("...는 창의적인 근거로 가볍게
    본다" under three unrelated items, issue 31) it explains nothing."""
    mine = [w for w in words(note) if len(w) >= 2 and w not in _GENERIC and not w.isdigit()]
    taught = [w for lesson in lessons for w in words(lesson) if len(w) >= 2 and w not in _GENERIC]
    own = [w for w in words(point) if len(w) >= 2]
    echoed = [w for w in mine if any(_near(w, t) for t in taught) and not any(_near(w, o) for o in own)]
    return len(echoed) >= 2 and 2 * len(echoed) >= len(mine)


_ID = re.compile(r"\[\s*t?\d+\s*\]|\bt\d+\b|#\d+")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d{2}(?:년|\b)")


def specific(lesson: str, names: tuple[str, ...] = (), labels: tuple[str, ...] = ()) -> str | None:
    """Why a lesson is about one case rather than a kind of news, or None: it names a text id, a
    date or year, the company (any of `names`), or a label word (Korean ones anywhere, Latin ones
    as capitalised words, since "negative news" is a fine lesson and "Negative" is an answer)."""
    if _ID.search(lesson):
        return "a text id"
    if dates_in(lesson, year=2000) or _YEAR.search(lesson):
        return "a date"
    low = lesson.lower()
    for name in names:
        if name and name.lower() in low:
            return f"the company ({name})"
    for word in labels:
        if (re.search(rf"\b{re.escape(word)}\b", lesson) if word.isascii() else word in lesson):
            return f"a label word ({word})"
    return None


def reanswer(lesson: str, markers: tuple[str, ...] = ()) -> bool:
    """A lesson that answers the question again: an explain marker (근거:, 판단:, Decision:) or an
    evidence line ([t12] + ...)."""
    return any(m and m in lesson for m in markers) or bool(re.search(r"\[\s*t?\d+\s*\]\s*[+0−-]", lesson))


# A reason's conclusion: a forecast of the price in the future tense (상승할, 떨어질, will rise). Past facts
# ("시총이 상승했고", "shares fell") and hedged negations ("unlikely to rise", "will not fall") never match.
_MODAL = r"\b(?:will|would|should|could|may|might|likely to|expected to|set to|poised to|going to)\s+(?:likely\s+|probably\s+)?"
_CONCLUSION = {
    "up": re.compile(r"상승(?:할|하겠|하리|세를 보일|세로 돌아설|으로 마감할)|오를|오르겠|올라갈|올라설|반등할|반등하겠"
                     r"|상승(?:을|이|으로) (?:예상|예측|전망)|"
                     + _MODAL + r"(?:continue to\s+)?(?:rise|increase|go up|gain|climb|rebound|rally|close higher|move higher|close up)\b"
                     r"|\babove (?:the|its) (?:last|previous|current) close", re.I),
    "down": re.compile(r"하락(?:할|하겠|하리|세를 보일|세로 돌아설|으로 마감할)|떨어질|떨어지겠|내려갈|내려설"
                       r"|하락(?:을|이|으로) (?:예상|예측|전망)|"
                       + _MODAL + r"(?:continue to\s+)?(?:fall|decrease|go down|drop|decline|slide|close lower|move lower|close down)\b"
                       r"|\bbelow (?:the|its) (?:last|previous|current) close", re.I),
}
# A reason that weighs the news and says which side wins argues a label as plainly as a forecast does: "The
# negative news about orders and contracts is outweighed by the positive news" (the default model, under Negative,
# twice in jobs/learning.toml), "긍정적인 요인이 부정적인 요인보다 크다". Group 1 is the winning side.
_SIDE = r"(positive|negative|bullish|bearish|긍정|부정)"
_WEIGHED = re.compile(r"\boutweighed by (?:the |its |their )?(?:\w+ ){0,2}?" + _SIDE +
                      r"|\b" + _SIDE + r"\b[^.,;\n]{0,60}?\b(?:outweighs?|(?:is|are) (?:the )?(?:more|most) (?:significant|important))\b"
                      r"|\boverall (?:sentiment|tone|message|picture|outlook) is (?:\w+ ){0,2}?" + _SIDE +
                      r"|" + _SIDE + r"적(?:인)? [^.,\n]{0,30}?보다 (?:크|강하|강한|많|무겁|중요)"
                      r"|전반적(?:인|으로)[^.\n]{0,20}?" + _SIDE + r"적", re.I)
_WAY = {"positive": "up", "bullish": "up", "긍정": "up", "negative": "down", "bearish": "down", "부정": "down"}
_DENIED = re.compile(r"^[^.!?\n]{0,12}?(?:가능성[은이]?\s*(?:낮|적|희박|없)|않|어렵)")  # 상승할 가능성은 낮다: the other way


_PRICE = re.compile(r"주가|종가|주식|시세|stock|shares?|price|close|\bit\b", re.I)  # what the forecast is about
_SELF_CONTAINED = re.compile(r"(?:예상|예측|전망)$|close$")  # 하락을 예상, above the last close: no subject needed


def concluded(reason: str) -> str | None:
    """Which way a reason's last forecast of the price points ("up" or "down"), or the side it last says
    weighs more ("outweighed by the positive news"), None when it does neither. A reason that ends
    "종가가 떨어질 가능성이 높습니다" under 상승 argues against its own label.
    A rise or fall counts only when the price is its subject (주가, 종가, the stock, shares): wages
    or a dividend that "will rise" forecast nothing about the close."""
    found = [(m.start(), way, m.end()) for way, pattern in _CONCLUSION.items() for m in pattern.finditer(reason)
             if _SELF_CONTAINED.search(m.group()) or _PRICE.search(reason[max(0, m.start() - 25):m.start()])]
    found += [(m.start(), _WAY[next(g for g in m.groups() if g).lower()], m.end()) for m in _WEIGHED.finditer(reason)]
    if not found:
        return None
    _, way, end = max(found)
    if _DENIED.match(reason[end:]):
        return "down" if way == "up" else "up"
    return way


@dataclass(frozen=True)
class Check:
    """What a generated text is checked against: the prompt's instructions (and example), its inputs, its window."""

    instructions: str
    inputs: str
    first_day: str
    last_day: str
    echo_of: str = ""  # e.g. the answer a reflection is about: quoting it is fine, repeating it is not
    kind: str = ""  # "summary": each point is checked for fusion; "explanation": for pasting; "lesson": below
    names: tuple[str, ...] = ()  # a lesson: the company's names, which a general lesson does not use
    labels: tuple[str, ...] = ()  # a lesson: the label words, and the explain markers a re-answer writes
    markers: tuple[str, ...] = ()
    lessons: tuple[str, ...] = ()  # an explanation: the recalled lessons its prompt showed (see echoed_lesson)

    def flags(self, text: str) -> list[str]:
        found = self.why(text)
        out = []
        if copied(text, self.instructions) or (self.echo_of and copied_share(text, self.echo_of) >= 0.5):
            out.append("copied")
        # with no content in its inputs (a day without news) there is nothing to ground on: no flag; a lesson
        # is about a kind of news, not this window, so it need not share a word with it
        has_content = any(w not in _GENERIC and len(w) >= 2 and not w.isdigit() for w in words(self.inputs))
        if text.strip() and has_content and self.kind != "lesson" and not grounded(text, self.inputs):
            out.append("ungrounded")
        known = set(dates_in(self.inputs))  # a date its inputs name (a scheduled event, say) is not invented
        if [d for d in invented_dates(text, self.first_day, self.last_day) if d not in known]:
            out.append("invented_dates")
        if "invented_numbers" in found:
            out.append("invented_numbers")
        if degenerate(text):
            out.append("degenerate")
        if self.kind == "explanation" and pasted(text, self.inputs):
            out.append("pasted")
        if "fused" in found:
            out.append("fused")
        if self.kind == "lesson":
            if "specific" in found:
                out.append("specific")
            if reanswer(text, self.markers):
                out.append("reanswer")
        return out

    def why(self, text: str) -> dict[str, str]:
        """What each content flag found, for people: the invented numbers, the fused point."""
        out = {}
        numbers = invented_numbers(text, self.inputs, date_numbers(self.first_day, self.last_day))
        if numbers:
            out["invented_numbers"] = ", ".join(numbers)
        if self.kind == "summary":
            reasons = [r for r in (fused(p, self.inputs) for p in _POINT_LINE.findall(text)) if r]
            if reasons:
                out["fused"] = reasons[0]
        if self.kind == "lesson":
            why = specific(text, self.names, self.labels)
            if why:
                out["specific"] = why
        return out


def join_flags(flags: list[str]) -> str | None:
    """How flags are stored: comma-joined, NULL when clean."""
    return ",".join(flags) or None


def join_asks(asks: list[list[str]]) -> str | None:
    """How a re-asked forecast's asks are stored: each ask's flags comma-joined, asks apart by ';'
    ("stance_mismatch;" = flagged, then clean); NULL when it was asked once."""
    return ";".join(",".join(flags) for flags in asks) if len(asks) > 1 else None


def reask_reasons(stored: list[str | None]) -> dict[str, int]:
    """Why forecasts were asked again: each flag counted once per ask that another ask followed."""
    counts: dict[str, int] = {}
    for asks in filter(None, stored):
        for flags in asks.split(";")[:-1]:
            for flag in filter(None, flags.split(",")):
                counts[flag] = counts.get(flag, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
