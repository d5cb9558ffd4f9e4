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

FLAGS = ("copied", "ungrounded", "invented_dates", "degenerate")
COPY_RUN = 8  # a run of this many words shared with the instructions is a copy

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


def degenerate(text: str) -> bool:
    """Empty, looping or repeating text: a line or a 4-word run said three times, or few distinct words."""
    ws = words(text)
    if not ws:
        return True
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and Counter(lines).most_common(1)[0][1] >= 3:
        return True
    grams = Counter(tuple(ws[i:i + 4]) for i in range(len(ws) - 3))
    if grams and grams.most_common(1)[0][1] >= 3:
        return True
    return len(ws) >= 12 and len(set(ws)) / len(ws) < 0.35


@dataclass(frozen=True)
class Check:
    """What a generated text is checked against: the prompt's instructions (and example), its inputs, its window."""

    instructions: str
    inputs: str
    first_day: str
    last_day: str
    echo_of: str = ""  # e.g. the answer a reflection is about: quoting it is fine, repeating it is not

    def flags(self, text: str) -> list[str]:
        out = []
        if copied(text, self.instructions) or (self.echo_of and copied_share(text, self.echo_of) >= 0.5):
            out.append("copied")
        # with no content in its inputs (a day without news) there is nothing to ground on: no flag
        has_content = any(w not in _GENERIC and len(w) >= 2 and not w.isdigit() for w in words(self.inputs))
        if text.strip() and has_content and not grounded(text, self.inputs):
            out.append("ungrounded")
        known = set(dates_in(self.inputs))  # a date its inputs name (a scheduled event, say) is not invented
        if [d for d in invented_dates(text, self.first_day, self.last_day) if d not in known]:
            out.append("invented_dates")
        if degenerate(text):
            out.append("degenerate")
        return out


def join_flags(flags: list[str]) -> str | None:
    """How flags are stored: comma-joined, NULL when clean."""
    return ",".join(flags) or None
