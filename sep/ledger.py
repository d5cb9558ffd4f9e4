"""Pre-registered forecasts: an append-only, hash-chained ledger written before the outcome exists.

Every dataset sep ships with is older than the packaged models' training data, so no backtest can
rule out memory. A forecast fixed before its target close exists, and scored only afterwards, can:

1. `add`: decide D as `sep reflect` does (trial 0, lessons recalled, nothing told), refused when the
   target close is already in memory ("too late") or (stock, D, model) already has an entry, and
   append one entry: the forecast, its evidence, the model and the sha256 of its weights, the prompt
   versions and the sha256 of the rendered prompt, the sep version, `created_at` (UTC), chained by
   `hash = sha256(prev_hash + "\\n" + canonical JSON)`;
2. `score`: once the target close is in memory, store the outcome in its own table (entries never change);
3. `verify`: recompute the chain; the first entry edited, deleted, inserted or moved is named;
4. `export`: JSONL of the entries exactly as hashed, verifiable without sep (docs/jobs.md);
5. `evaluate`: score only entries made before their outcome existed, split at the model's cutoff.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils

from sep.decide import Decider
from sep.errors import BadInput
from sep.evaluate import Decision, baselines, forecast_report, once_per_interval
from sep.memory import GENESIS, LedgerRow, LedgerStore, entry_hash
from sep.models import model_cutoff
from sep.prompting import load_prompt, prompt_files
from sep.settings import Progress, Settings, default
from sep.tradingdays import market_close, market_tz
from sep.window import decision_window, label_of, lang_of, outcome, parse_day, up_probability, window_start

BOARD_PAGES, NEWS_PAGES, PAGE_DELAY = 5, 5, 1.0  # what a daily run reads at most, and its pause between pages

KINDS = {  # how an entry's score may be read, by when it was made
    "after_cutoff": "pre-registered, after the model's cutoff",
    "before_cutoff": "pre-registered, before the cutoff",
    "replay": "registered after its target close existed: a replay, not a pre-registration",
}


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(path: str) -> str:
    """sha256 of a weights file, computed once per process and file version (a GGUF takes seconds)."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def close_moment(stock: str, day: str) -> datetime:
    """When `day`'s regular session closes, in UTC: before it the day's close does not exist."""
    hour, minute = market_close(stock)
    local = datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=ZoneInfo(market_tz(stock)))
    return local.astimezone(timezone.utc)


def check_decidable(store: LedgerStore, stock: str, date: str, now: datetime, model: str | None = None) -> None:
    """One sentence (BadInput) when D cannot be pre-registered: already there (for `model`), too late,
    or D's session not closed yet."""
    if model is not None and store.exists(stock, date, model):
        raise BadInput(f"The ledger already has {stock} on {date} by {model}: entries are never replaced.")
    later = store.has_close_after(stock, date)
    if later:
        raise BadInput(f"Too late to pre-register {stock} on {date}: the close of {later} is already in memory.")
    if now < close_moment(stock, date):
        raise BadInput(f"{stock}'s session of {date} has not closed yet ({close_moment(stock, date):%Y-%m-%d %H:%M} "
                       "UTC): a decision at the end of D waits for D's close.")


@dataclass
class Added:
    """One appended entry, as stored."""

    row: LedgerRow
    texts: int
    withheld: int

    def as_json(self) -> dict:
        return {"id": self.row.id, **self.row.entry, "prev_hash": self.row.prev_hash, "hash": self.row.hash,
                "texts": self.texts, "withheld": self.withheld}


def add(db: sqlite_utils.Database, cfg: Settings, llm, stock: str, date: str, *, now: datetime | None = None,
        progress: Progress | None = None) -> Added:
    """Decide D (forecast only) and append it to the ledger; refused before any model call when it can't be."""
    from sep import __version__

    date, now = parse_day(date), now or datetime.now(timezone.utc)
    started = time.monotonic()
    store = LedgerStore(db)
    check_decidable(store, stock, date, now, llm.name)
    window = decision_window(db, stock, date, cfg.window_days, pending=True)
    stage = f"pre-registering {stock} {date}"
    if progress:
        progress(stage, 0, 1)
    result = Decider(db, cfg, llm).preregister(window)
    if progress:
        progress(stage, 1, 1)
    trial = result.trials[0]
    label = None if trial.flags else trial.label  # a flagged answer is withheld, as everywhere
    lang = lang_of(stock)
    appended = now + timedelta(seconds=time.monotonic() - started)  # the moment of the append, not of the ask
    entry = {
        "stock": stock, "date": date, "target_day": window.target_day,
        "last_trading_day": window.last_trading_day, "last_close": window.last_close,
        "label": label, "p_up": up_probability(label, trial.confidence), "flags": trial.flags,
        "explanation": trial.explanation,
        "evidence": [{"item": e["item"], "direction": e.get("direction")} for e in trial.evidence],
        "lessons_recalled": len(result.recalled),
        "model": llm.name, "weights": [{"file": Path(p).name, "sha256": weights_sha256(p)} for p in llm.weights],
        "prompt_versions": {agent: load_prompt(lang, name, cfg.prompts).version
                            for agent, name in prompt_files(cfg.explain_format).items()},
        "prompt_sha256": hashlib.sha256(trial.prompt.encode()).hexdigest(),
        "settings": {"window_days": cfg.window_days, "explain_format": cfg.explain_format,
                     "summarizer": cfg.summarizer, "seed": cfg.seed},
        "sep_version": __version__, "created_at": appended.isoformat(timespec="seconds"),
    }
    check_decidable(store, stock, date, appended, llm.name)  # a price import while the model thought makes it late
    return Added(store.append(entry), len(window.texts), len(window.withheld))


def score(db: sqlite_utils.Database) -> dict:
    """Store the outcome of every entry whose target close is now in memory (once; entries unchanged)."""
    store = LedgerStore(db)
    done = store.outcomes()
    new, waiting = [], []
    for row in store.rows():
        if row.id in done:
            continue
        e = row.entry
        try:
            last, last_close, target, target_close, ret = outcome(db, e["stock"], e["date"])
        except BadInput:  # no close after D yet
            waiting.append(row.id)
            continue
        new.append((row.id, target, last_close, target_close, ret, label_of(ret)))
    stored = store.store_outcomes(new)
    return {"scored": stored, "already_scored": len(done), "waiting": len(waiting), "entries": len(done) + len(new)
            + len(waiting)}


@dataclass
class Verified:
    """The chain recomputed: how many entries hold, the head hash, and the first break."""

    entries: int
    head: str
    broken_id: int | None = None
    why: str | None = None
    head_found: bool | None = None  # None: no published head was given

    @property
    def ok(self) -> bool:
        return self.broken_id is None and self.why is None

    def as_json(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "broken_id": self.broken_id,
                "why": self.why, "head_found": self.head_found}


def verify_rows(rows: list[LedgerRow], head: str | None = None) -> Verified:
    """Recompute every hash in order; the first entry that does not follow is named."""
    prev, seen = GENESIS, {GENESIS}
    for n, row in enumerate(rows):
        before = rows[n - 1].id if n else None
        if row.prev_hash != prev:
            where = f"the entry before it (id {before})" if before else "the start of the ledger"
            return Verified(n, prev, row.id, f"entry {row.id} does not follow {where}: an entry was deleted, "
                                             "inserted or moved")
        if entry_hash(row.prev_hash, row.entry_json) != row.hash:
            return Verified(n, prev, row.id, f"entry {row.id} was edited: its contents no longer match its hash")
        try:
            e = json.loads(row.entry_json)
        except json.JSONDecodeError:
            return Verified(n, prev, row.id, f"entry {row.id} is not JSON")
        if (e.get("stock"), e.get("date"), e.get("model")) != (row.stock, row.date, row.model):
            return Verified(n, prev, row.id, f"entry {row.id}'s stock, date or model column differs from its "
                                             "hashed contents")
        prev = row.hash
        seen.add(prev)
    result = Verified(len(rows), prev)
    if head is not None:
        result.head_found = head in seen
        if not result.head_found:
            result.why = (f"the published head {head[:12]}… is not in this ledger: entries up to it were removed or "
                          "rewritten")
    return result


def verify(db: sqlite_utils.Database, head: str | None = None) -> Verified:
    return verify_rows(LedgerStore(db).rows(), head)


def export(db: sqlite_utils.Database, out: Path) -> dict:
    """One JSON line per entry: id, `entry` as the exact string hashed, prev_hash, hash."""
    rows = LedgerStore(db).rows()
    tmp = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"id": r.id, "entry": r.entry_json, "prev_hash": r.prev_hash, "hash": r.hash},
                                   ensure_ascii=False) + "\n")
        tmp.replace(out)  # a reader never sees half a file
    except OSError as exc:
        raise BadInput(f"Can't write {out}: {exc.strerror or exc}.") from None
    return {"out": str(out), "entries": len(rows), "head": rows[-1].hash if rows else GENESIS}


def kind_of(entry: dict, target_day: str, cutoff: str | None) -> str:
    """replay when the entry was made after its target close; else before/after the model's cutoff."""
    made = datetime.fromisoformat(entry["created_at"])
    if made >= close_moment(entry["stock"], target_day):
        return "replay"
    return "after_cutoff" if cutoff and entry["date"] > cutoff else "before_cutoff"


@dataclass
class Shown:
    rows: list[dict] = field(default_factory=list)

    def as_json(self) -> list[dict]:
        return self.rows


def show(db: sqlite_utils.Database, cutoff: str | None = None) -> Shown:
    """Every entry with its hash and, once scored, its outcome and kind."""
    store = LedgerStore(db)
    outcomes = store.outcomes()
    rows = []
    for r in store.rows():
        e, o = r.entry, outcomes.get(r.id)
        rows.append({"id": r.id, **e, "hash": r.hash, "outcome": o,
                     "correct": (e["label"] == o["actual"]) if o else None,
                     "kind": kind_of(e, o["target_day"] if o else e["target_day"],
                                     cutoff or model_cutoff(e["model"])["date"])})
    return Shown(rows)


def evaluate(db: sqlite_utils.Database, *, cutoff: str | None = None, seed: int = default("seed")) -> dict:
    """Scores of the scored entries by kind: pre-registered after / before the cutoff, replays apart."""
    store = LedgerStore(db)
    outcomes = store.outcomes()
    if not outcomes:
        raise BadInput("No scored ledger entries: add some (sep ledger add), wait for their target close, import it "
                       "and run `sep ledger score`.")
    groups: dict[str, list[Decision]] = {k: [] for k in KINDS}
    cutoffs = {}
    for r in store.rows():
        o = outcomes.get(r.id)
        if o is None:
            continue
        e = r.entry
        cut = cutoffs.setdefault(e["model"], cutoff or model_cutoff(e["model"])["date"])
        label = e["label"]
        confidence = None if label is None or e["p_up"] is None else e["p_up"] if label == "up" else 1 - e["p_up"]
        groups[kind_of(e, o["target_day"], cut)].append(Decision(
            e["stock"], e["date"], o["target_day"], o["actual"], label, confidence, o["ret"], e["explanation"],
            e["last_trading_day"], "ledger", e["model"], False, e["flags"]))
    report: dict = {"cutoffs": cutoffs, "waiting": len(store.rows()) - len(outcomes), "kinds": {}}
    for kind, ds in groups.items():
        ds = once_per_interval(ds)  # a holiday D shares the trading day's (last close, target): scored once
        if not ds:
            continue
        report["kinds"][kind] = {"what": KINDS[kind], "start": ds[0].date, "end": ds[-1].date,
                                 **forecast_report(ds, seed), "baselines": baselines(db, ds, seed)}
    return report


def today_in(stock: str, now: datetime | None = None) -> str:
    """D for a daily job: the market's local date (run after the close)."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(ZoneInfo(market_tz(stock))).date().isoformat()




@dataclass
class DailyRun:
    """What `sep ledger run` did for each stock: fetched, scored, added or refused (and why)."""

    date: dict[str, str]
    stocks: dict[str, dict] = field(default_factory=dict)
    scored: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"date": self.date, "stocks": self.stocks, "scored": self.scored}


def fetch_day(db: sqlite_utils.Database, stock: str, day: str, since: str, board_pages: int, news_pages: int,
              delay: float, fetch=None) -> dict:
    """One stock's prices (FinanceDataReader) and its board posts and news titles since `since` (Naver),
    stored all or nothing: what was stored, or the status "layout changed" when a page no longer parses."""
    from datetime import date as Date

    from sep.crawl import BOARD_URL, NEWS_URL, PageLayoutChanged, fetch_pages, fetch_prices, http_fetch, store_day

    try:
        prices = fetch_prices(stock, (Date.fromisoformat(day) - timedelta(days=40)).isoformat(), day)
        texts = fetch_pages("board", BOARD_URL, stock, since, board_pages, delay=delay, fetch=fetch or http_fetch)
        texts += fetch_pages("news", NEWS_URL, stock, since, news_pages, delay=delay, fetch=fetch or http_fetch)
    except PageLayoutChanged as exc:
        return {"status": "layout changed", "error": str(exc)}
    return store_day(db, stock, prices, texts, day)


def run(db: sqlite_utils.Database, cfg: Settings, make_llm, stocks: list[str], *, date: str | None = None,
        live: bool = False, board_pages: int = BOARD_PAGES, news_pages: int = NEWS_PAGES, delay: float = PAGE_DELAY,
        fetch=None, dedup: bool = True, now: datetime | None = None, progress: Progress | None = None) -> DailyRun:
    """The daily job: with `live`, fetch each stock's prices (FinanceDataReader) and the day's board
    posts and news titles (Naver), all or nothing per stock; score what can be scored; deduplicate;
    then pre-register each stock's D (default: today in the market's zone). A stock whose page
    changed its layout, or whose D is too late, is reported and the others go on."""
    now = now or datetime.now(timezone.utc)
    days = {s: parse_day(date) if date else today_in(s, now) for s in stocks}
    result = DailyRun(days)
    for stock in stocks:
        if live and LedgerStore(db).exists(stock, days[stock]):  # a rerun after a crash: this day is in already
            result.stocks[stock] = {"fetched": "skipped: the ledger has this day"}
        elif live:
            result.stocks[stock] = fetch_day(db, stock, days[stock], window_start(days[stock], cfg.window_days),
                                             board_pages, news_pages, delay, fetch)
        else:
            result.stocks[stock] = {}
    result.scored = score(db)  # yesterday's entries, now that today's closes are in
    llm = None
    for stock in stocks:
        report = result.stocks[stock]
        if report.get("status"):
            continue
        try:
            check_decidable(LedgerStore(db), stock, days[stock], now)
            if dedup:
                from sep.dedup import DedupConfig, Deduplicator

                Deduplicator(db, DedupConfig.from_settings(cfg), threads=cfg.threads,
                             cache_dir=cfg.cache_dir).run(stock, window_start(days[stock], cfg.window_days),
                                                          days[stock])
            llm = llm or make_llm(cfg)
            added = add(db, cfg, llm, stock, days[stock], now=now, progress=progress)
            report.update({"status": "added", "id": added.row.id, "label": added.row.entry["label"],
                           "p_up": added.row.entry["p_up"], "hash": added.row.hash})
        except BadInput as exc:
            report.update({"status": "refused", "error": str(exc)})
    return result
