"""Evaluation and audit over predictions made through real HTTP by a scripted server."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sep.evaluate import Decision, backtest, binomial_p, mcc
from sep.ingest import import_texts
from sep.memory import open_memory

from conftest import run
from fake_openai import FakeOpenAI

SUMMARY = "- 외국인 순매도 확대와 금리 인상 우려 보도"
EXPLAIN = ("근거:\n[{item}] - 외국인 순매도 확대\n판단: 하락\n이유: 외국인 순매도 확대와 금리 인상 우려가 이어진다. 실적 개선과 매수 기대, 반등, 상승 호재가 크다. "
           "6월 15일 FOMC 결과가 나왔다. 게시판의 <script>alert('x')</script> 삼성 가즈아 글도 있다.")
# grounded and ungrounded claims, bullish words under a 하락 label, a date after D, and markup quoted from a post


def test_metrics_on_known_cases():
    assert mcc([("up", "up"), ("down", "down")]) == pytest.approx(1.0)
    assert mcc([("up", "down"), ("down", "up")]) == pytest.approx(-1.0)
    assert mcc([("up", None), ("down", "down")]) == pytest.approx(0.0)  # over answered days: one side only
    assert mcc([("up", None)]) is None
    assert binomial_p(5, 10) == pytest.approx(1.0) and binomial_p(10, 10) == pytest.approx(2 / 1024)
    days = [Decision("A", "2022-05-02", "2022-05-03", "down", "down", 0.9, -0.02),
            Decision("A", "2022-05-03", "2022-05-04", "up", "down", 0.55, 0.01)]
    bt = backtest(days, cost_bps=0)
    assert bt["gross"]["cumulative_return"] == pytest.approx((1 + 0.02) * (1 - 0.01) - 1)  # short gains on a fall
    assert bt["buy_and_hold"]["cumulative_return"] == pytest.approx((1 - 0.02) * (1 + 0.01) - 1)
    assert bt["hit_rate"] == pytest.approx(0.5)
    flat = backtest(days, threshold=0.6, cost_bps=0)
    assert flat["positions"] == 1 and flat["gross"]["cumulative_return"] == pytest.approx(0.02)


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, Path]:
    from sep.ingest import import_prices
    from sep.sample import sample_files

    d = tmp_path_factory.mktemp("eval")
    db_path = d / "sep.db"
    db = open_memory(db_path)
    prices, texts = sample_files()
    import_prices(db, prices)
    import_texts(db, texts)
    (d / "evil.jsonl").write_text(json.dumps({"stock": "005930", "date": "2022-05-24", "source": "naver-board",
                                              "title": "<script>alert('x')</script> 삼성 가즈아"}, ensure_ascii=False) + "\n")
    import_texts(db, [d / "evil.jsonl"])
    db.conn.close()
    def reply(kind: str, prompt: str) -> str:
        first = re.search(r"^\[(t\d+)\]", prompt, flags=re.M)  # cite the window's first item
        return {"summarize": SUMMARY, "reflect": "금리를 봤어야 했다."}.get(kind, EXPLAIN.format(item=first and first[1]))

    with FakeOpenAI(reply) as server:
        job = d / "job.toml"
        job.write_text(f'name = "e"\nstocks = ["005930"]\nstart = "2022-05-16"\nend = "2022-05-31"\ntrials = 2\n'
                       f'concurrency = 4\n[llm]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n')
        done = run("batch", "run", str(job), db=db_path)
        assert done.returncode == 0, done.stderr
    return db_path, job


def test_eval_scores_match_the_stored_predictions(scored):
    db_path, job = scored
    out = run("eval", "--job", str(job), "--json", db=db_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    db = open_memory(db_path)
    forecasts = db.execute("SELECT label, actual, flags FROM predictions WHERE method = 'reflect' AND trial = 0").fetchall()
    assert report["n"] == len(forecasts) == 12 and report["forecast"]["method"] == "reflect"
    # a flagged answer (here: the 6월 15일 no summary holds) counts as unparsable, so wrong
    assert report["accuracy"] == pytest.approx(sum(a == b and not f for a, b, f in forecasts) / len(forecasts))
    assert report["unparsable"] == sum(bool(f) for _, _, f in forecasts)
    lo, hi = report["accuracy_ci95"]
    assert lo <= report["accuracy"] <= hi
    assert set(report["baselines"]) == {"majority", "momentum", "random"}
    assert "hindsight" in report and "trial_0_only" not in report  # retries are reported apart, as hindsight
    c = report["confusion"]
    assert c["up"]["down"] + c["down"]["down"] == len(forecasts) - report["unparsable"]  # the script always says 하락
    assert len(report["backtest"]["net"]["curve"]) == len(forecasts)
    assert 0 <= report["brier"] <= 1 and len(report["reliability"]) == 10
    again = json.loads(run("eval", "--job", str(job), "--json", db=db_path).stdout)
    assert again == report  # seeded: the same numbers every time


def test_audit_flags_escapes_and_writes_a_json_twin(scored, tmp_path):
    db_path, job = scored
    out = tmp_path / "report.html"
    done = run("audit", "--job", str(job), "--out", str(out), db=db_path)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    twin = json.loads(out.with_suffix(".json").read_text())
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # quoted markup is shown, never run
    audits = twin["audits"]
    assert len(audits) == twin["summary"]["explanations"] == 12
    a = audits[0]
    assert a["stance"] == "up" and not a["consistent"]  # bullish words under a 하락 label
    assert a["future_dates"] == ["2022-06-15"]
    grounded = [c for c in a["claims"] if c["grounded"]]
    assert grounded and all(cite.startswith("text:") for c in grounded for cite in c["cites"])
    assert all(len(c["sources"]) == len(c["cites"]) >= 1 for c in grounded)  # the titles it rests on
    assert any(not c["grounded"] for c in a["claims"])
    assert "<svg" in html and "Reliability" in html and "Cumulative return" in html
    db = open_memory(db_path)
    post = db.execute("SELECT id FROM texts WHERE source = 'naver-board'").fetchone()[0]
    for x in audits:  # the post (dated 05-24) is cited only by windows that contain it: never before its day
        cites = {c for claim in x["claims"] for c in claim["cites"]}
        assert (f"text:{post}" in cites) == ("2022-05-24" <= x["date"] <= "2022-05-28"), x["date"]


@pytest.mark.slow
def screenshot(page: Path, tmp_path: Path) -> bytes:
    """A PNG of `page` rendered by headless Chromium (skipped where there is none, failed in CI)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        if os.environ.get("SEP_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium); .ci/run installs it")
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=120)
    return shot.read_bytes()


def test_audit_report_screenshots_in_headless_chromium(scored, tmp_path):
    db_path, job = scored
    out = tmp_path / "report.html"
    assert run("audit", "--job", str(job), "--out", str(out), db=db_path).returncode == 0
    data = screenshot(out, tmp_path)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a real page, not a blank frame


def test_audit_judge_scores_come_from_the_configured_llm(scored, tmp_path):
    db_path, job = scored
    with FakeOpenAI(lambda kind, prompt: "관련성 5, 명확성 4, 일관성 6", owned_by="other") as server:
        out = tmp_path / "judged.html"
        done = run("audit", "--job", str(job), "--out", str(out), "--judge", "--base-url", server.base_url, db=db_path)
        assert done.returncode == 0, done.stderr
        judge_prompts = [r["messages"][-1]["content"] for r in server.requests]
    twin = json.loads(out.with_suffix(".json").read_text())
    assert len(judge_prompts) == 12 and all("설명:" in p and "FOMC" in p for p in judge_prompts)
    assert all(a["judge"] == {"relevance": 5, "clarity": 4, "consistency": 6} for a in twin["audits"])
    assert twin["summary"]["judge_mean"] == {"relevance": 5.0, "clarity": 4.0, "consistency": 6.0}
    assert twin["summary"]["judge_missing"] == {"relevance": 0, "clarity": 0, "consistency": 0}


def test_stance_reads_english_words_whole_and_korean_stems():
    from sep.audit import stance

    assert stance("Strong support from supply chains") == "neutral"  # "up" is not in "support" or "supply"
    assert stance("Shares may go up on strong growth") == "up"
    assert stance("외국인 매도와 실적 부진으로 하락할 것") == "down"


def test_the_time_rule_is_an_error_not_an_assert(sample_memory):
    from sep.agents import Agents
    from sep.errors import TimeRuleError
    from sep.window import Text, decision_window

    w = decision_window(sample_memory, "005930", "2022-05-30", 3)
    w.texts.append(Text(10**9, "news", "2022-05-31", None, "내일 기사", None, None))
    with pytest.raises(TimeRuleError):
        Agents(sample_memory, None, "ko").summaries(w)


def test_the_models_own_summary_grounds_nothing(sample_memory):
    """A fixed sentence about drug trials, as the explanation for Samsung news, is unsupported even
    when the model's own summary of the window says the same thing (it used to ground itself)."""
    from sep.audit import audit_one

    db = sample_memory
    fixed = "임상 3상 결과와 FDA 허가 기대감이 신약 파이프라인 가치를 끌어올릴 것이다."
    title_id, title = db.execute("SELECT id, title FROM texts WHERE date = '2022-05-30' ORDER BY id").fetchone()
    for day, summary in (("2022-05-27", f"- {fixed}"), ("2022-05-30", f"- {fixed} [t{title_id}]")):
        db.execute("INSERT INTO summaries (stock, date, text_hash, n_texts, model, prompt_version, summary, created_at) "
                   "VALUES ('005930', ?, 'h', 1, 'm', 'v', ?, '2022-05-30')", [day, summary])
    paraphrase = f"{title} 소식이 나왔다."
    d = Decision("005930", "2022-05-31", "2022-06-02", "down", "up", 0.6, -0.01, f"상승\n{fixed}\n{paraphrase}")
    claims = {c.text: c for c in audit_one(db, d, 5).claims}
    assert not claims[fixed].grounded and claims[fixed].sources == []
    real = claims[paraphrase]
    assert real.grounded and title in real.sources and f"text:{title_id}" in real.cites
