"""`sep audit --faithfulness N`: does the evidence an answer cites move it? Measured against scripted
servers whose dependence on the evidence is known, end to end through the CLI (real HTTP)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from sep.memory import open_memory

from conftest import run
from fake_openai import FakeOpenAI, cite_all

CHIPS = re.compile(r"^\[(t\d+)\] (.*(?:반도체|파운드리).*)$", re.M)  # the items a chip-driven server reads
FIRST = re.compile(r"^\[(t\d+)\] (.+)$", re.M)
DAYS = ("2022-05-25", "2022-05-26", "2022-05-27", "2022-05-30")


def driven(kind: str, prompt: str) -> str:
    """Says 하락 citing the window's chip items (at most three) when there are any, else 상승 citing
    its first item: removing the cited items changes the answer exactly when no chip item is left."""
    if kind == "summarize":
        return cite_all(prompt)
    if kind == "reflect":
        return "반도체 소식을 더 무겁게 봐야 했다."
    chips = CHIPS.findall(prompt)[:3]
    if chips:
        lines = "\n".join(f"[{i}] - {' '.join(t.split()[:3])}" for i, t in chips)
        return f"근거:\n{lines}\n판단: 하락\n이유: 반도체 업황 우려가 투자 심리를 누르고 있어 다음 거래일에도 약세가 이어질 것으로 본다."
    first = FIRST.search(prompt)
    if not first:
        return "근거:\n판단: 상승\n이유: 새 소식이 없어 직전 흐름이 이어질 것으로 본다."
    return (f"근거:\n[{first[1]}] + {' '.join(first[2].split()[:3])}\n판단: 상승\n"
            f"이유: 반도체 악재가 보이지 않아 투자 심리가 버틸 것으로 본다.")


def ignores_evidence(kind: str, prompt: str) -> str:
    """Always 하락, citing whatever item comes first: its evidence is decoration."""
    if kind == "summarize":
        return cite_all(prompt)
    first = FIRST.search(prompt)
    item = f"[{first[1]}] - {' '.join(first[2].split()[:3])}\n" if first else ""
    return f"근거:\n{item}판단: 하락\n이유: 시장 전반의 분위기가 약해 다음 거래일에도 약세가 이어질 것으로 본다."


@pytest.fixture
def decided(sample_memory, db_path) -> Path:
    sample_memory.conn.close()
    return db_path


def reflect_days(server: FakeOpenAI, db: Path) -> None:
    done = run("reflect", "--stock", "005930", "--start", DAYS[0], "--end", DAYS[-1], "--trials", "1", "--json",
               "--base-url", server.base_url, db=db)
    assert done.returncode == 0, done.stderr


def audit(server_url: str, db: Path, out: Path, n: int = len(DAYS)):
    return run("audit", "--stock", "005930", "--out", str(out), "--faithfulness", str(n), "--json",
               "--base-url", server_url, db=db)


def expected_faithful(db: Path) -> dict[str, bool]:
    """Per day, from the forecasts' own prompts: removing the cited chip items leaves none (≤ 3)."""
    rows = open_memory(db).execute("SELECT date, prompt FROM predictions WHERE trial = 0").fetchall()
    return {day: 0 < len(CHIPS.findall(json.loads(prompt)[-1]["content"])) <= 3 for day, prompt in rows}


def test_evidence_that_drives_the_answer_is_faithful(decided, tmp_path):
    with FakeOpenAI(driven) as server:
        reflect_days(server, decided)
        done = audit(server.base_url, decided, tmp_path / "r.html")
        assert done.returncode == 0, done.stderr
    faith = json.loads((tmp_path / "r.json").read_text())["faithfulness"]
    expected = expected_faithful(decided)
    assert set(expected.values()) == {True, False}, expected  # these days hold both cases
    assert faith["n"] == len(DAYS) and {r["date"]: r["faithful"] for r in faith["forecasts"]} == expected
    assert faith["rate"] == sum(expected.values()) / len(DAYS)
    # removing the chip items flips 하락 to 상승 where none is left; with only them, the answer stands
    assert all(r["moved_label"] == r["faithful"] for r in faith["forecasts"])
    assert faith["sufficient"] == len(DAYS) and faith["by_kind"]["news"]["n"] == len(DAYS)
    html = (tmp_path / "r.html").read_text()
    assert "<h2>Faithfulness</h2>" in html and html.count('"ok">faithful<') == sum(expected.values())
    assert html.count('"bad">decorative<') == len(DAYS) - sum(expected.values())
    from test_eval_audit import screenshot

    data = screenshot(tmp_path / "r.html", tmp_path)  # the page with its faithfulness tables renders
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_evidence_the_answer_ignores_is_decorative(decided, tmp_path):
    with FakeOpenAI(ignores_evidence) as server:
        reflect_days(server, decided)
        done = audit(server.base_url, decided, tmp_path / "r.html")
        assert done.returncode == 0, done.stderr
        server.requests.clear()
        again = run("audit", "--stock", "005930", "--out", str(tmp_path / "again.html"), "--faithfulness", "4",
                    "--base-url", server.base_url, db=decided)
        assert server.requests == []  # cached: asked once
    faith = json.loads((tmp_path / "r.json").read_text())["faithfulness"]
    assert faith["n"] == len(DAYS) and faith["faithful"] == 0 and faith["rate"] == 0.0
    assert faith["mean_shift"] == pytest.approx(0.0) and faith["label_moved"] == 0
    assert "removing the cited evidence moved 0 of 4 forecasts (0%" in " ".join(again.stdout.split())
    assert "4 explanation(s) decorative" in " ".join(again.stdout.split())


def test_a_server_that_dies_mid_run_keeps_what_finished(decided, tmp_path):
    with FakeOpenAI(driven) as server:
        reflect_days(server, decided)
    answered = []

    def dies_after_three(kind: str, prompt: str) -> str:
        answered.append(kind)
        if len(answered) == 3:  # answer this one, then the server is gone
            threading.Thread(target=lambda: (dying.server.shutdown(), dying.server.server_close())).start()
        return driven(kind, prompt)

    with FakeOpenAI(dies_after_three) as dying:
        done = audit(dying.base_url, decided, tmp_path / "r.html")
    assert done.returncode != 0 and "did not answer" in done.stderr
    assert len([ln for ln in done.stderr.strip().splitlines() if ln.startswith("Error")]) == 1
    db = open_memory(decided)
    assert db.execute("SELECT count(*) FROM faithfulness").fetchone()[0] == 3  # kept: two variants, then one
    with FakeOpenAI(driven) as server:
        assert audit(server.base_url, decided, tmp_path / "r.html").returncode == 0
        assert len(server.requests) == 2 * len(DAYS) - 3  # only what was missing is asked
