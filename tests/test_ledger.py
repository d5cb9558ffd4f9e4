"""The pre-registered ledger: known answers through real HTTP, tamper evidence, refusals, a crash
mid-append, and the daily live run from recorded pages (respx for httpx, responses for requests)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import run
from fake_openai import FakeOpenAI, known_skill
from sep.memory import open_memory

SAMPLE_DAYS = ("2022-05-02", "2022-05-31")  # the sample's news month


def sample_prices(until: str | None = None, after: str | None = None) -> list[str]:
    """The bundled price lines (FinanceDataReader layout) dated on or before `until` / only `after`."""
    from sep.sample import sample_files

    lines = sample_files()[0][0].read_text().splitlines()
    return [ln for ln in lines if (until is None or ln[:10] <= until) and (after is None or ln[:10] == after)]


def import_lines(db, lines: list[str], path: Path) -> None:
    from sep.ingest import import_prices

    path.write_text("\n".join(lines) + "\n")
    import_prices(db, [path], stock="005930")


def after_close(day: str, minutes: int = 60) -> datetime:
    """A clock that reads `minutes` after KRX's close of `day` (the daily job's time), in UTC."""
    return datetime.fromisoformat(f"{day}T15:30+09:00").astimezone(timezone.utc) + timedelta(minutes=minutes)


def truth() -> dict[str, str]:
    """The actual label of every sample day, from a memory that holds every close."""
    from sep.decide import decidable_days
    from sep.ingest import import_prices
    from sep.sample import sample_files
    from sep.window import decision_window

    db = open_memory(":memory:")
    import_prices(db, sample_files()[0])
    return {d: decision_window(db, "005930", d).label for d in decidable_days(db, "005930", *SAMPLE_DAYS)}


def skilled(day: str) -> bool:
    return hashlib.sha256(f"ledger 005930 {day}".encode()).digest()[0] < 0.7 * 256


def build_ledger(tmp_path: Path, llm, days: list[str]):
    """The daily routine replayed on the sample: prices up to D, pre-register D just after its close,
    then the next close arrives and is scored. Returns the open memory."""
    import sep
    from sep.ingest import import_texts
    from sep.sample import sample_files

    db = open_memory(tmp_path / "sep.db")
    import_texts(db, sample_files()[1])
    import_lines(db, sample_prices(until=days[0]), tmp_path / "p0.csv")
    every = [ln[:10] for ln in sample_prices() if not ln.endswith(",0,0,0,0,0,0")]
    for day in days:
        sep.ledger_add(db, "005930", day, llm=llm, now=after_close(day))
        target = next(d for d in every if d > day)
        import_lines(db, sample_prices(after=target), tmp_path / f"{target}.csv")
        sep.ledger_score(db)
    return db


def test_a_server_of_known_skill_is_scored_exactly_from_the_ledger(tmp_path):
    """Pre-registered day by day (each D decided before its target close was imported), then scored:
    `sep eval --ledger` reports exactly the share of days the hash made right, as pre-registered
    before the model's cutoff; the chain verifies and the export checks out without sep."""
    import sep

    actual = truth()
    days = sorted(actual)
    assert len(days) == 21
    with FakeOpenAI(known_skill(actual, skilled)) as server:
        llm = sep.make_llm(sep.Settings(base_url=server.base_url, model="fake-model"))
        build_ledger(tmp_path, llm, days).conn.close()
    out = run("eval", "--ledger", "--cutoff", "2024-01-31", "--json", db=tmp_path / "sep.db")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert list(report["kinds"]) == ["before_cutoff"] and report["waiting"] == 0
    scored = report["kinds"]["before_cutoff"]
    assert scored["what"] == "pre-registered, before the cutoff"
    assert scored["n"] == 21 and scored["coverage"] == 1.0
    assert scored["accuracy"] == pytest.approx(sum(map(skilled, days)) / 21, abs=1e-12)
    assert {"majority", "momentum", "random"} <= set(scored["baselines"])
    text = run("eval", "--ledger", "--cutoff", "2024-01-31", db=tmp_path / "sep.db").stdout
    assert "pre-registered, before the cutoff" in text and "baseline: momentum" in text
    # the entries themselves
    entries = json.loads(run("ledger", "show", "--json", db=tmp_path / "sep.db").stdout)
    first = entries[0]
    assert (first["stock"], first["date"], first["target_day"]) == ("005930", "2022-05-02", "2022-05-03")
    assert first["model"].startswith("fake-model") and first["weights"] == []  # a server's weights are unknown
    assert set(first["prompt_versions"]) == {"summarize", "explain", "reflect", "kind"} and len(first["prompt_sha256"]) == 64
    assert first["evidence"] and first["evidence"][0]["item"].startswith("t")
    assert all(e["outcome"] and e["correct"] == skilled(e["date"]) for e in entries)
    # the chain, and an export anyone can check with hashlib alone
    verified = run("ledger", "verify", "--json", db=tmp_path / "sep.db")
    assert verified.returncode == 0 and json.loads(verified.stdout)["entries"] == 21
    exported = run("ledger", "export", "--out", str(tmp_path / "ledger.jsonl"), db=tmp_path / "sep.db")
    assert exported.returncode == 0, exported.stderr
    prev = "0" * 64
    for line in (tmp_path / "ledger.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["prev_hash"] == prev
        assert hashlib.sha256(f"{prev}\n{row['entry']}".encode()).hexdigest() == row["hash"]
        prev = row["hash"]
    assert prev == json.loads(verified.stdout)["head"]


@pytest.fixture
def small_ledger(tmp_path, mock_llm) -> Path:
    """Four entries by the scripted in-process model (05-02..05-06), three of them scored."""
    db = build_ledger(tmp_path, mock_llm, ["2022-05-02", "2022-05-03", "2022-05-04", "2022-05-06"])
    db.conn.close()
    return tmp_path / "sep.db"


def tampered(src: Path, dest: Path, *statements: str) -> Path:
    """A copy of the ledger edited as someone with the sqlite3 shell would: around the triggers."""
    shutil.copy(src, dest)
    conn = sqlite3.connect(dest)
    conn.executescript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;" + ";".join(statements))
    conn.close()
    return dest


def test_verify_names_the_entry_that_was_edited_deleted_or_moved(small_ledger, tmp_path):
    ok = run("ledger", "verify", db=small_ledger)
    assert ok.returncode == 0 and "ok: 4 entries" in ok.stdout
    head = re.search(r"head ([0-9a-f]{64})", ok.stdout)[1]
    with pytest.raises(sqlite3.IntegrityError, match="never updated"):  # sep's own path cannot edit an entry
        conn = sqlite3.connect(small_ledger)
        conn.execute("UPDATE ledger SET entry = replace(entry, '\"label\":\"up\"', '\"label\":\"down\"')")
    conn.close()
    label = json.loads(sqlite3.connect(small_ledger).execute("SELECT entry FROM ledger WHERE id = 2").fetchone()[0])["label"]
    flipped = {"up": "down", "down": "up"}[label]
    cases = {
        "edited": (tampered(small_ledger, tmp_path / "edit.db", f"UPDATE ledger SET entry = replace(entry, "
                                                                  f"'\"label\":\"{label}\"', '\"label\":\"{flipped}\"') WHERE id = 2"),
                   "entry 2 was edited"),
        "deleted": (tampered(small_ledger, tmp_path / "delete.db", "DELETE FROM ledger WHERE id = 2"),
                    "entry 3 does not follow the entry before it (id 1)"),
        "swapped": (tampered(small_ledger, tmp_path / "swap.db",
                             "UPDATE ledger SET id = -2 WHERE id = 2", "UPDATE ledger SET id = 2 WHERE id = 3",
                             "UPDATE ledger SET id = 3 WHERE id = -2"),
                    "entry 2 does not follow the entry before it (id 1)"),
        "column": (tampered(small_ledger, tmp_path / "column.db", "UPDATE ledger SET stock = '000660' WHERE id = 4"),
                   "entry 4's stock, date or model column differs"),
    }
    for name, (path, why) in cases.items():
        out = run("ledger", "verify", db=path)
        assert out.returncode == 1, (name, out.stdout)
        assert why in " ".join(out.stdout.split()), (name, out.stdout)
    # cutting the last entry leaves a valid chain: the published head finds it
    cut = tampered(small_ledger, tmp_path / "cut.db", "DELETE FROM ledger_outcomes WHERE entry_id = 4",
                   "DELETE FROM ledger WHERE id = 4")
    assert run("ledger", "verify", db=cut).returncode == 0
    out = run("ledger", "verify", "--head", head, "--json", db=cut)
    assert out.returncode == 1 and json.loads(out.stdout)["head_found"] is False
    assert run("ledger", "verify", "--head", head, db=small_ledger).returncode == 0


def test_too_late_a_repeat_and_an_open_session_are_refused_in_one_sentence(small_ledger):
    db = small_ledger
    late = run("ledger", "add", "--stock", "005930", "--date", "2022-05-03", db=db)  # 05-04's close is in memory
    assert late.returncode == 2 and "Too late to pre-register 005930 on 2022-05-03" in late.stderr
    assert len(late.stderr.strip().splitlines()) == 1
    # the last entry (05-06) was scored by 05-09's close: nothing after 05-09 is in memory yet
    import sep
    from sep.backends.mock import mock_llm

    memory = open_memory(db)
    with pytest.raises(sep.errors.BadInput, match="already has 005930 on 2022-05-06"):
        memory.execute("DELETE FROM ledger_outcomes")  # allowed: outcomes are not entries
        memory.execute("DELETE FROM prices WHERE date > '2022-05-06'")
        sep.ledger_add(memory, "005930", "2022-05-06", llm=mock_llm(), now=after_close("2022-05-06"))
    with pytest.raises(sep.errors.BadInput, match="has not closed yet"):
        sep.ledger_add(memory, "005930", "2022-05-09", llm=mock_llm(), now=after_close("2022-05-09", minutes=-30))
    assert run("ledger", "verify", db=db).returncode == 0


def test_a_crash_inside_the_append_leaves_no_half_entry(tmp_path, mock_llm, monkeypatch):
    import sep
    import sep.memory.ledger

    db = build_ledger(tmp_path, mock_llm, ["2022-05-02"])
    memory_rows = db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]

    def crash(*args, **kwargs):  # raised after the INSERT ran, inside the transaction
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(sep.memory.ledger, "LedgerRow", crash)
    with pytest.raises(KeyboardInterrupt):
        sep.ledger_add(db, "005930", "2022-05-03", llm=mock_llm, now=after_close("2022-05-03"))
    monkeypatch.undo()
    assert db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == memory_rows == 1
    added = sep.ledger_add(db, "005930", "2022-05-03", llm=mock_llm, now=after_close("2022-05-03"))
    assert added.row.id == 2 and sep.ledger_verify(db).ok


# ---------------------------------------------------------------- the daily live run, from recorded pages

BOARD = "naver_board_list_005930_p1.html"
NEWS = "naver_news_list_005930_p1.html"
FCHART = "naver_fchart_005930.xml"


@pytest.fixture
def recorded(fixtures):
    """Naver's board list, news list (httpx, through respx) and chart feed (requests, through responses,
    as FinanceDataReader fetches it), served from the recorded pages in tests/fixtures."""
    import respx
    import responses

    pages = {"board": (fixtures / BOARD).read_bytes(), "news": (fixtures / NEWS).read_bytes()}
    html = {"content-type": "text/html;charset=EUC-KR"}
    with respx.mock(assert_all_called=False) as web, responses.RequestsMock(assert_all_requests_are_fired=False) as rq:
        web.route(host="127.0.0.1").pass_through()  # the model server is a real local one
        board = web.get(url__regex=r"https://finance\.naver\.com/item/board\.naver.*")
        board.respond(200, content=pages["board"], headers=html)
        news = web.get(url__regex=r"https://finance\.naver\.com/item/news_news\.naver.*")
        news.respond(200, content=pages["news"], headers=html)
        rq.add(responses.GET, re.compile(r"https://fchart\.stock\.naver\.com/sise\.nhn.*"),
               body=(fixtures / FCHART).read_bytes(), content_type="text/xml;charset=EUC-KR")
        yield {"board": board, "news": news, "pages": pages}


def test_the_live_daily_run_fetches_scores_and_pre_registers(recorded, tmp_path):
    """Day 1 (05-31, after the close): prices, board and news fetched, deduplicated, pre-registered.
    Day 2 (06-02, after 06-01's election holiday): the 05-31 entry is scored, 06-02 pre-registered."""
    import sep
    from sep.settings import Settings

    db = open_memory(tmp_path / "sep.db")
    actual = truth() | {"2022-06-02": "down"}
    with FakeOpenAI(known_skill(actual, skilled)) as server:
        cfg = Settings(base_url=server.base_url, model="fake-model", db=tmp_path / "sep.db")
        day1 = sep.ledger_run(db, ["005930"], live=True, delay=0, settings=cfg, now=after_close("2022-05-31"))
        r = day1.stocks["005930"]
        assert day1.date == {"005930": "2022-05-31"} and r["status"] == "added", r
        assert r["prices_added"] == 28 and r["texts_added"] == 15  # 05-27..05-31 news; the 2021 board posts are older
        entry = json.loads(db.execute("SELECT entry FROM ledger").fetchone()[0])
        assert entry["target_day"] == "2022-06-02" and entry["last_trading_day"] == "2022-05-31"
        assert db.execute("SELECT MAX(date) FROM prices").fetchone()[0] == "2022-05-31"
        # 05-31's own news was read, and the texts a window shows were deduplicated
        assert db.execute("SELECT COUNT(*) FROM texts WHERE date = '2022-05-31' AND is_representative IS NOT NULL"
                          ).fetchone()[0] == 8
        day2 = sep.ledger_run(db, ["005930"], live=True, delay=0, settings=cfg, now=after_close("2022-06-02"))
        assert day2.scored["scored"] == 1 and day2.stocks["005930"]["status"] == "added"
        # the same day again: refused, and nothing fetched twice
        again = sep.ledger_run(db, ["005930"], live=True, delay=0, settings=cfg, now=after_close("2022-06-02", 90))
        assert again.stocks["005930"]["status"] == "refused" and "already has" in again.stocks["005930"]["error"]
        assert again.stocks["005930"]["fetched"].startswith("skipped") and recorded["news"].call_count == 2
    shown = sep.ledger_show(db).as_json()
    assert [(e["date"], e["outcome"] and e["outcome"]["actual"]) for e in shown] == [("2022-05-31", "down"),
                                                                                     ("2022-06-02", None)]
    assert shown[0]["kind"] == "before_cutoff"  # made at 16:30 on 05-31, before 06-02's close existed


def test_a_changed_page_layout_is_one_sentence_and_stores_nothing_of_the_day(recorded, tmp_path):
    recorded["news"].respond(200, content="<html><body><div class='news_list'>새 레이아웃</div></body></html>".encode(),
                             headers={"content-type": "text/html;charset=utf-8"})
    db_path = tmp_path / "sep.db"
    open_memory(db_path).conn.close()
    out = run("ledger", "run", "--live", "--stocks", "005930", "--date", "2022-05-31", "--delay", "0",
              "--base-url", "http://127.0.0.1:9", db=db_path)
    assert out.returncode == 1, out.stdout + out.stderr
    said = " ".join(out.stdout.split())
    assert "The news page https://finance.naver.com/item/news_news.naver?code=005930&page=1" in said
    assert "no longer has the layout sep reads" in said and "nothing of 005930's day was stored" in said
    foreign = run("ledger", "run", "--live", "--stocks", "ABBV", db=db_path)  # Naver's pages know KRX codes only
    assert foreign.returncode == 2 and "ABBV is not a KRX code" in " ".join(foreign.stderr.split())
    db = open_memory(db_path)
    assert db.execute("SELECT COUNT(*) FROM prices").fetchone()[0] == 0  # the prices came fine: not stored either
    assert db.execute("SELECT COUNT(*) FROM texts").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 0
