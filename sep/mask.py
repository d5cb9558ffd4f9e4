"""Masking for the memorization probe (the experiment's `masked` arm).

Every prompt the masked arm sends has the company's name, short name and code replaced by a
neutral placeholder (해당사, "the company in question" / Company A) and every date by one: the window's days become ordered
letters (날짜 가, 날짜 나, …, 기준일), any other date [날짜] / [date]. A model that answers from what it
remembers about *this company on this day* loses that edge; a model that reads the news keeps it.

What it cannot hide: products, executives, rival companies, price levels and the events
themselves still identify a day to a model that memorised it, so the gap to the unmasked arm is
a lower bound on memorization; and dates carry real information (an earnings date), so some of
the gap can be lost signal, not lost memory. docs/agents.md says the same for users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMPANY = {"ko": "해당사", "en": "Company A"}
DATE = {"ko": "[날짜]", "en": "[date]"}
DECISION_DAY = {"ko": "기준일", "en": "decision day"}
DAY_OF_TEXTS = {"ko": "당일", "en": "that day"}  # a summary's own day: summaries are shared by every window
ORDER = {"ko": "가나다라마바사아자차카타파하", "en": "ABCDEFGHIJKLMN"}
SUFFIXES = re.compile(r"\s*(?:\(주\)|주식회사|㈜|,?\s*(?:Inc|Corp|Corporation|Co|Ltd|Company|plc|PLC|Holdings)\.?)+\s*$")
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec")
DATE_PATTERNS = [
    r"(?<!\d)(?:19|20)\d{2}[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])(?!\d)",  # 2022-05-26, 2022.5.26
    r"(?<!\d)(?:19|20)?\d{2}\s*년(?:\s*(?:0?[1-9]|1[0-2])\s*월)?(?:\s*(?:0?[1-9]|[12]\d|3[01])\s*일)?",  # 2022년 5월 26일
    r"(?<!\d)(?:0?[1-9]|1[0-2])\s*월(?:\s*(?:0?[1-9]|[12]\d|3[01])\s*일)?",  # 5월 26일, 5월
    r"(?<![\d/])(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])(?:/(?:19|20)?\d{2})?(?![\d/])",  # 5/26, 5/26/2022
    rf"(?<![\d-])\d{{1,2}}[- ](?:{_MONTHS})(?:[- ](?:19|20)?\d{{2}})?\b",  # 03-Jan, 26 May 2022
    rf"\b(?:{_MONTHS})\.?(?:\s+\d{{1,2}}(?:st|nd|rd|th)?)?(?:,?\s+(?:19|20)\d{{2}})?\b",  # May 26, 2022
    r"(?<!\d)(?:19|20)\d{2}(?!\d)",  # a bare year
]
_DATE = re.compile("|".join(f"(?:{p})" for p in DATE_PATTERNS))
# the particle written for the name replaced, made right for 해당사 (삼성은 → 해당사는)
_AFTER_VOWEL = {"은": "는", "이": "가", "을": "를", "과": "와", "으로": "로"}
_PARTICLE_FIX = re.compile(re.escape(COMPANY["ko"]) + r"(으로|은|이|을|과)(?![가-힣])")


@dataclass(frozen=True)
class Masker:
    """Hides one company's identity and the dates in text; `for_window` names the window's days."""

    lang: str
    aliases: tuple[str, ...]  # longest first
    days: tuple[tuple[str, str], ...] = ()  # (ISO day, placeholder) of the window being masked

    @classmethod
    def for_company(cls, lang: str, code: str, name: str | None) -> "Masker":
        """The code, the name, the name without its corporate suffix and, for a Korean name of four
        or more syllables, its first two (삼성전자 → 삼성: the group, also in 삼성폰 or 삼성물산)."""
        names = {code, code.lstrip("0") if code.isdigit() else code}
        if name and name != code:
            short = SUFFIXES.sub("", name).strip()
            names |= {f"{name}({code})", name, short}
            if re.fullmatch(r"[가-힣]{4,}", short):
                names.add(short[:2])
        return cls(lang, tuple(sorted((n for n in names if len(n) >= 2), key=len, reverse=True)))

    def for_window(self, days: list[str], decision_day: str) -> "Masker":
        """Placeholders for the window's days, in order: the earliest 날짜 가 / day A, …, the decision day."""
        before = sorted(d for d in set(days) if d < decision_day)[-len(ORDER[self.lang]):]
        word = "날짜" if self.lang == "ko" else "day"
        named = [(d, f"{word} {ORDER[self.lang][i]}") for i, d in enumerate(before)]
        return Masker(self.lang, self.aliases, (*named, (decision_day, DECISION_DAY[self.lang])))

    def for_day(self, day: str) -> "Masker":
        return Masker(self.lang, self.aliases, ((day, DAY_OF_TEXTS[self.lang]),))

    def text(self, text: str) -> str:
        for day, placeholder in self.days:  # the window's own days keep their order
            text = text.replace(day, placeholder)
        text = _DATE.sub(DATE[self.lang], text)
        company = COMPANY[self.lang]
        edge = r"(?<![가-힣A-Za-z0-9])"  # not \w: ①삼성전자 is a name after a list marker
        for alias in self.aliases:
            if alias.isdigit() or re.fullmatch(r"[A-Z.]{1,6}", alias):  # a code or ticker, also as $ABBV
                text = re.sub(rf"\$?{edge}{re.escape(alias)}(?![A-Za-z0-9])", company, text)
            else:  # also where it begins a word: 삼성폰, 삼성물산 and 삼성SDI name the group
                text = re.sub(rf"{edge}{re.escape(alias)}", company, text, flags=re.IGNORECASE)
        if self.lang == "ko":
            text = _PARTICLE_FIX.sub(lambda m: company + _AFTER_VOWEL[m[1]], text)
        return text

    def messages(self, messages: list[dict]) -> list[dict]:
        return [{**m, "content": self.text(m["content"])} for m in messages]
