"""The Python API in-process: the mock backend drives the agents, batch, best-of-n and judge
without a model or HTTP; a failure inside the write transaction leaves memory unchanged."""

from __future__ import annotations

import sqlite3

import pytest

import sep
from sep.errors import BadInput
from sep.llm import mock_llm

from conftest import FIXTURES, table_digest


@pytest.fixture
def mock():
    """The scripted in-process backend (default script: cite, explain with the summary's words, a lesson)."""
    return mock_llm()


def test_reflect_over_a_range_with_the_mock_backend(sample_memory, mock):
    cfg = sep.Settings(trials=2)
    seen = []
    run = sep.reflect(sample_memory, "005930", start="2022-05-30", end="2022-05-31", settings=cfg, llm=mock,
                      on_day=lambda result: seen.append(result.window.date))
    assert seen == ["2022-05-30", "2022-05-31"] == [r.window.date for r in run.results]
    agents = [c["agent"] for c in mock.chat.calls]
    assert {"summarize", "explain"} <= set(agents)
    # 05-31 → 06-02 fell: the mock's 상승 is wrong, so it reflected and retried (hindsight), and stored it
    last = run.results[-1]
    assert last.trials[0].label == "up" and not last.trials[0].correct and len(last.trials) == 2
    assert last.trials[0].reflection and "reflect" in agents
    stored = sample_memory.execute("SELECT count(*) FROM predictions WHERE model = 'mock'").fetchone()[0]
    assert stored == sum(len(r.trials) for r in run.results)
    assert run.model == "mock" and run.calls == len(mock.chat.calls)
    assert run.as_json()[0]["date"] == "2022-05-30"


def test_forecast_and_evaluation_with_the_mock_backend(sample_memory, mock):
    result = sep.forecast(sample_memory, "005930", "2022-05-31", best_of=3, llm=mock)
    assert result.label == "up" and len(result.candidates) == 3 and 0 < result.confidence < 1
    report = sep.evaluate_forecasts(sample_memory, stock="005930", method="best-of-n").as_json()
    assert report["n"] == 1 and report["accuracy"] == 0.0  # 06-02 fell; the mock always says 상승


def test_a_backend_is_chosen_by_name_and_an_unknown_one_is_one_sentence():
    assert sep.make_llm(sep.Settings(backend="mock")).name == "mock"
    with pytest.raises(BadInput, match="Unknown backend 'nope': choose one of .*embedded.*mock.*openai.*policy"):
        sep.make_llm(sep.Settings(backend="nope"))


def test_a_failure_inside_the_write_transaction_changes_nothing(memory, monkeypatch):
    """The second file's write fails after the first was written: the whole import rolls back."""
    from sep import ingest

    sep.import_prices(memory, [FIXTURES / "005930_D.csv"])
    before = table_digest(memory)
    real = ingest.write_texts
    written = []

    def failing(db, parsed):
        if written:
            raise sqlite3.OperationalError("disk I/O error")
        written.append(real(db, parsed))
        assert db.execute("SELECT count(*) FROM texts").fetchone()[0] > 0  # really inside, really written
        return written[-1]

    monkeypatch.setattr(ingest, "write_texts", failing)
    with pytest.raises(BadInput, match="nothing was written"):
        sep.import_texts(memory, [FIXTURES / "discussion_005930.csv", FIXTURES / "generic_texts.jsonl"])
    assert written and table_digest(memory) == before


def test_import_reports_progress_per_file(memory):
    seen = []
    imported = sep.import_prices(memory, [FIXTURES / "005930_D.csv", FIXTURES / "stock_list.csv"],
                                 progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen == [("reading prices", 1, 2), ("reading prices", 2, 2)]
    assert [f["format"] for f in imported.as_json()] == ["quantkang", "stock-list"]


def test_a_batch_job_and_the_judge_on_the_mock_backend(sample_memory, db_path, tmp_path):
    """BatchRunner and the audit's judge in-process, driven by the scripted backend."""
    job = tmp_path / "job.toml"
    job.write_text('name = "mocked"\nstocks = ["005930"]\nstart = "2022-05-30"\nend = "2022-05-31"\ntrials = 1\n')
    cfg = sep.Settings(db=db_path, backend="mock")
    stages = []
    report = sep.run_batch(job, settings=cfg, progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert (report.total, report.done, report.failed) == (2, 2, 0)
    assert stages[-1][1] == stages[-1][2]  # the last stage completed
    assert sep.batch_status(sample_memory, job)["done"] == 2
    audited = sep.audit_explanations(sample_memory, tmp_path / "report.html", job=job, judge=True, settings=cfg)
    audits = audited.data["audits"]
    assert len(audits) == 2 and all(a["judge"] == {"relevance": 4, "clarity": 4, "consistency": 4} for a in audits)
    assert audited.html.exists() and audited.json.exists()
