"""What a decision "at the end of day D" may see: the single place the time rule lives.

The target is the close of the first trading day after D against the last close on or
before D. Texts enter only when they count for a day on or before D (local time), within the
last `window_days` calendar days. A text published after the market's close (KRX 15:30 KST,
NYSE 16:00 ET) counts for the next day, because a position decided at D's close could not have
read it; a text with only a date counts for that date. Every prompt is built from a
`DecisionWindow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlite_utils

from sep.errors import BadInput
from sep.guard import injections_of
from sep.memory.stocks import closes_on, price_days, priced_stocks, texts_between
from sep.settings import default
from sep.tradingdays import (
    TradingDays,
    is_krx_holiday,
    market_close,
    market_of,
    market_tz,
    next_session,
)

LABEL_WORDS = {"ko": {"up": "상승", "down": "하락"}, "en": {"up": "Positive", "down": "Negative"}}
LABEL_MARKERS = {"ko": "판단:", "en": "Decision:"}  # what an evidence-first answer writes before its label
# What the interface says around them, in the stock's language (Korean stocks in Korean, as in SEP's English set)
UI_WORDS = {"ko": {"summary": "요약", "recalled": "과거의 반성 (recalled)", "unparsable": "판단 불가"},
            "en": {"summary": "Summary", "recalled": "Lessons recalled", "unparsable": "unparsable"}}


def lang_of(stock: str) -> str:
    """Korean for KRX codes, English (SEP's setup) for other tickers: the prompts' language and the interface's."""
    return "ko" if market_of(stock) == "XKRX" else "en"


def label_word(label: str | None, stock: str) -> str:
    """up/down as the stock's language says it: 상승/하락, Positive/Negative; None is unparsable."""
    lang = lang_of(stock)
    return LABEL_WORDS[lang].get(label or "", UI_WORDS[lang]["unparsable"])


def up_probability(label: str | None, confidence: float | None, unknown: float | None = None) -> float | None:
    """P(the close goes up) from an answered label and the confidence in it; `unknown` when either is missing."""
    if label is None or confidence is None:
        return unknown
    return confidence if label == "up" else 1.0 - confidence


def parse_day(value: str) -> str:
    """Accept YYYY-MM-DD (or YYYYMMDD) and return ISO; anything else is bad input."""
    text = value.strip()
    if len(text) == 8 and text.isdigit():
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return Date.fromisoformat(text).isoformat()
    except ValueError:
        raise BadInput(f"'{value}' is not a date: use YYYY-MM-DD, e.g. 2022-06-01.") from None


def label_of(ret: float) -> str:
    """`up` when the next close is strictly higher, else `down` (SEP: Positive iff return > 0)."""
    return "up" if ret > 0 else "down"


@dataclass
class Text:
    id: int
    source: str
    date: str
    published_at: str | None
    title: str
    body: str | None
    url: str | None
    representative: int | None = None  # None: dedup has not run on this day; 1/0 once it has
    injection: str | None = None  # why it addresses the model (sep.guard); such a text never enters a prompt


# Sources whose texts are short enough to show as written: an editor's headline is already a summary of
# its story, and a tweet is one or two sentences. The model rewriting them only adds risk, so `auto` shows
# them as written. On the sample it changed the meaning of 12 of the 140 titles it cited ("코스피 순이익,
# 삼성전자 빼면 26% 급감" → "삼성전자의 순이익이 … 26% 감소했다"); on 50 tweet days of five SN2 tickers the gate
# refused 29 of its summaries, and 13 of the 44 points it kept on the rest changed what the tweet said ("$UPS
# Don't miss the next move" → "UPS is warning of a potential move in the stock price"). Board posts, long
# and unmeasured, are still summarized.
AS_WRITTEN_SOURCES = ("news", "report", "tweet")


@dataclass
class DecisionWindow:
    stock: str
    date: str
    last_trading_day: str
    last_close: float
    target_day: str
    target_close: float | None  # None in a pending window: the outcome does not exist yet (a pre-registration)
    ret: float | None
    label: str | None
    window_start: str
    is_holiday: bool
    texts: list[Text] = field(default_factory=list)
    withheld: list[Text] = field(default_factory=list)  # texts addressing the model: shown to the user, never prompted

    @property
    def label_word(self) -> str:
        """The actual label in the stock's language (상승/하락, Positive/Negative)."""
        return label_word(self.label, self.stock)

    def text_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.texts:
            counts[t.source] = counts.get(t.source, 0) + 1
        return dict(sorted(counts.items()))

    def texts_by_day(self) -> dict[str, list[Text]]:
        days: dict[str, list[Text]] = {}
        for t in self.texts:
            days.setdefault(t.date, []).append(t)
        return dict(sorted(days.items()))

    def as_json(self) -> dict:
        return {
            "stock": self.stock,
            "date": self.date,
            "last_trading_day": self.last_trading_day,
            "last_close": self.last_close,
            "target_day": self.target_day,
            "target_close": self.target_close,
            "return": self.ret,
            "label": self.label,
            "texts": self.text_counts(),
            "withheld": [{"id": t.id, "date": t.date, "source": t.source, "title": t.title, "why": t.injection}
                         for t in self.withheld],
        }


def trading_days(db: sqlite_utils.Database, stock: str) -> TradingDays:
    days = price_days(db, stock)
    if not days:
        known = priced_stocks(db)
        hint = f" Known stocks: {', '.join(known)}." if known else " No prices imported yet."
        raise BadInput(f"Unknown stock '{stock}': no prices for it in the memory.{hint}")
    return TradingDays.for_stock(stock, days)


def decision_window(
    db: sqlite_utils.Database,
    stock: str,
    date: str,
    window_days: int = default("window_days"),
    *,
    days: TradingDays | None = None,
    pending: bool = False,
) -> DecisionWindow:
    """Build the window for deciding at the end of `date`; raises BadInput outside the data.

    `pending`: the outcome is not known yet (a pre-registered forecast): the target is the next
    session of the market's calendar, and its close, return and label are None."""
    date = parse_day(date)
    if pending:
        last, last_close, target = pending_outcome(db, stock, date, days=days)
        target_close = ret = None
    else:
        last, last_close, target, target_close, ret = outcome(db, stock, date, days=days)
    start = window_start(date, window_days)
    texts = texts_in_window(db, stock, start, date)
    return DecisionWindow(
        stock=stock,
        date=date,
        last_trading_day=last,
        last_close=last_close,
        target_day=target,
        target_close=target_close,
        ret=ret,
        label=None if ret is None else label_of(ret),
        window_start=start,
        is_holiday=market_of(stock) == "XKRX" and is_krx_holiday(date),
        texts=[t for t in texts if not t.injection],
        withheld=[t for t in texts if t.injection],
    )


def outcome(db: sqlite_utils.Database, stock: str, date: str, *, days: TradingDays | None = None
            ) -> tuple[str, float, str, float, float]:
    """(last trading day, its close, target day, its close, return) of deciding at the end of `date`.

    The market side of a window without its texts: evaluation and rewards need only this.
    """
    days = days or trading_days(db, stock)
    last = days.on_or_before(date)
    target = days.after(date)
    if last is None or target is None:
        raise BadInput(
            f"{date} is outside the price data of {stock} ({days.days[0]} to {days.days[-1]}): "
            "a decision needs a close on or before the date and a trading day after it."
        )
    close = closes_on(db, stock, [last, target])
    return last, close[last], target, close[target], close[target] / close[last] - 1.0


def window_start(date: str, window_days: int) -> str:
    """The first day a decision at the end of `date` reads texts of (`window_days` calendar days, D included)."""
    return (Date.fromisoformat(date) - timedelta(days=window_days - 1)).isoformat()


def pending_outcome(db: sqlite_utils.Database, stock: str, date: str, *, days: TradingDays | None = None
                    ) -> tuple[str, float, str]:
    """(last trading day, its close, target day) of a decision at the end of `date` whose target close
    is not in memory yet. The target day is the next KRX session for a Korean stock, else the next
    weekday (a US holiday then names the day before the real session; the outcome is scored by the
    first close after D all the same)."""
    days = days or trading_days(db, stock)
    last = days.on_or_before(date)
    if last is None:
        raise BadInput(f"No close of {stock} on or before {date} in memory ({days.days[0]} is the first): "
                       "a decision needs the last close before it.")
    close = closes_on(db, stock, [last])[last]
    return last, close, next_session(stock, date)


def counts_for(stock: str, day: str, published_at: str | None) -> str:
    """The day a text counts for: its local day, or the next one when published at or after the close."""
    if not published_at or "T" not in published_at and " " not in published_at.strip():
        return day  # only a date: that date
    try:
        moment = datetime.fromisoformat(published_at.strip())
    except ValueError:
        return day
    zone = ZoneInfo(market_tz(stock))
    local = moment.astimezone(zone) if moment.tzinfo else moment.replace(tzinfo=zone)
    if (local.hour, local.minute) >= market_close(stock):
        return (local.date() + timedelta(days=1)).isoformat()
    return local.date().isoformat()


def texts_in_window(db: sqlite_utils.Database, stock: str, start: str, end: str) -> list[Text]:
    """Texts that count for start..end inclusive. `end` is the decision day: nothing later, ever.

    A text's `date` here is the day it counts for (`counts_for`), so one posted after the close of
    the day before `start` enters, and one posted after the close of `end` does not.
    """
    before = (Date.fromisoformat(start) - timedelta(days=1)).isoformat()
    rows = texts_between(db, stock, before, end)
    out, unchecked = [], []
    for *row, allowed in rows:
        text = Text(*row)
        text.date = counts_for(stock, text.date, text.published_at)
        if start <= text.date <= end:
            out.append(text)
            if not allowed and not text.injection:
                unchecked.append(text)
    # the rules ran at import (a newer rule file may know more); the semantic detector runs here, on
    # the texts a prompt may show: a few hundred per window, not every text of a feed at import
    for text, why in zip(unchecked, injections_of([(t.title, t.body) for t in unchecked])):
        text.injection = why
    return sorted(out, key=lambda t: (t.date, t.published_at or "", t.id))
