"""Trading calendars and the time rule.

Korean stocks follow the KRX calendar (exchange_calendars' XKRX), which knows holidays such as
the 2022-06-01 local elections. Other markets use the days present in their price rows.
"""

from __future__ import annotations

import bisect
import re
from datetime import date as Date
from datetime import timedelta
from functools import lru_cache

KRX_CODE = re.compile(r"^\d{6}$")


def market_of(stock: str) -> str:
    """`XKRX` for a six-digit KRX code, otherwise `PRICES` (use the price rows' days)."""
    return "XKRX" if KRX_CODE.match(stock) else "PRICES"


def market_tz(stock: str) -> str:
    """The zone a text's local day is taken in: KST for Korean stocks, New York otherwise (sn2)."""
    return "Asia/Seoul" if market_of(stock) == "XKRX" else "America/New_York"


def market_close(stock: str) -> tuple[int, int]:
    """The regular close (hour, minute) in `market_tz`: KRX 15:30 KST, NYSE 16:00 ET."""
    return (15, 30) if market_of(stock) == "XKRX" else (16, 0)


@lru_cache(maxsize=1)
def krx_sessions() -> tuple[str, ...]:
    """All XKRX sessions the calendar knows, as ISO days (built once per process, ~1 s)."""
    import exchange_calendars as xc

    cal = xc.get_calendar("XKRX", start="1990-01-03")
    return tuple(d.strftime("%Y-%m-%d") for d in cal.sessions)


class TradingDays:
    """The days a stock can be traded on, with the two questions the time rule asks."""

    def __init__(self, days: list[str]):
        self.days = sorted(set(days))

    @classmethod
    def for_stock(cls, stock: str, price_days: list[str]) -> "TradingDays":
        """Price days that are also exchange sessions (halted or bogus rows drop out)."""
        if market_of(stock) == "XKRX" and price_days:
            sessions = krx_sessions()
            lo, hi = sessions[0], sessions[-1]
            known = _krx_session_set()
            # Outside the calendar's range we can only trust the price rows themselves.
            return cls([d for d in price_days if d in known or d < lo or d > hi])
        return cls(price_days)

    def on_or_before(self, day: str) -> str | None:
        i = bisect.bisect_right(self.days, day)
        return self.days[i - 1] if i else None

    def after(self, day: str) -> str | None:
        i = bisect.bisect_right(self.days, day)
        return self.days[i] if i < len(self.days) else None

    def between(self, start: str, end: str) -> list[str]:
        """Trading days d with start <= d <= end."""
        return self.days[bisect.bisect_left(self.days, start) : bisect.bisect_right(self.days, end)]


def next_session(stock: str, day: str) -> str:
    """The first session after `day` by the calendar alone (no price rows): KRX's for a Korean stock,
    the next weekday otherwise. What a forecast made before its target close exists aims at."""
    if market_of(stock) == "XKRX":
        sessions = krx_sessions()
        i = bisect.bisect_right(sessions, day)
        if i < len(sessions):
            return sessions[i]
    d = Date.fromisoformat(day) + timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d.isoformat()


@lru_cache(maxsize=1)
def _krx_session_set() -> frozenset[str]:
    return frozenset(krx_sessions())


def is_krx_holiday(day: str) -> bool:
    """True for a weekday on which KRX was closed (weekends are not 'holidays' here)."""
    sessions = krx_sessions()
    in_range = sessions[0] <= day <= sessions[-1]
    return Date.fromisoformat(day).weekday() < 5 and in_range and day not in _krx_session_set()
