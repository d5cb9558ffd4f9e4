"""The Python API in-process: the mock backend drives the agents, batch, best-of-n and judge
without a model or HTTP; a failure inside the write transaction leaves memory unchanged."""

from __future__ import annotations

import json
import sqlite3

import pytest

import sep
from sep.errors import BadInput

from conftest import FIXTURES, table_digest


def test_reflect_over_a_range_with_the_mock_backend(sample_memory, mock_llm):
    cfg = sep.Settings(trials=2)
    seen = []
    run = sep.reflect(sample_memory, "005930", start="2022-05-30", end="2022-05-31", settings=cfg, llm=mock_llm,
                      on_day=lambda result: seen.append(result.window.date))
    assert seen == ["2022-05-30", "2022-05-31"] == [r.window.date for r in run.results]
    agents = [c["agent"] for c in mock_llm.chat.calls]
    assert {"summarize", "explain"} <= set(agents)
    # 05-31 → 06-02 fell: the mock's 상승 is wrong, so it reflected and retried (hindsight), and stored it
    last = run.results[-1]
    assert last.trials[0].label == "up" and not last.trials[0].correct and len(last.trials) == 2
    assert last.trials[0].reflection and "reflect" in agents
    stored = sample_memory.execute("SELECT count(*) FROM predictions WHERE model = 'mock'").fetchone()[0]
    assert stored == sum(len(r.trials) for r in run.results)
    assert run.model == "mock" and run.calls == len(mock_llm.chat.calls)
    assert run.as_json()[0]["date"] == "2022-05-30"


def test_forecast_and_evaluation_with_the_mock_backend(sample_memory, mock_llm):
    result = sep.forecast(sample_memory, "005930", "2022-05-31", best_of=3, llm=mock_llm)
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


def test_a_batch_stores_what_reflect_and_forecast_store(sample_memory, db_path, tmp_path, mock_llm):
    """A batch job runs `sep.reflect` and `sep.forecast` per day: the same answers, trials and
    best-of-n choices as calling them one day at a time."""
    job = tmp_path / "job.toml"
    job.write_text('name = "same"\nstocks = ["005930"]\nstart = "2022-05-27"\nend = "2022-05-31"\n'
                   'trials = 2\nbest_of_n = 2\n')
    report = sep.run_batch(job, settings=sep.Settings(db=db_path), llm_factory=lambda cfg: mock_llm)
    assert (report.done, report.failed) == (3, 0)
    other = sep.open_memory(tmp_path / "one_by_one.db")
    sep.import_sample(other)
    cfg = sep.Settings(trials=2)
    for day in sep.decision_days(other, "005930", start="2022-05-27", end="2022-05-31"):
        sep.reflect(other, "005930", date=day, settings=cfg, llm=mock_llm)
        sep.forecast(other, "005930", day, best_of=2, settings=cfg, llm=mock_llm)
    rows = "SELECT date, method, trial, label, explanation FROM predictions ORDER BY date, method, trial"
    batch, single = sample_memory.execute(rows).fetchall(), other.execute(rows).fetchall()
    assert len(batch) >= 3 + 3 and {r[1] for r in batch} == {"reflect", "best-of-n"}
    assert batch == single
    # a walk-forward experiment reflects on its train days through the same path
    from sep.experiment import Experiment
    from sep.jobs import load_job

    exp_db = sep.open_memory(tmp_path / "experiment.db")
    sep.import_sample(exp_db)
    job.write_text('name = "exp"\nstocks = ["005930"]\nstart = "2022-05-27"\nend = "2022-06-03"\ntrials = 2\n'
                   '[experiment]\ntrain_start = "2022-05-27"\ntrain_end = "2022-05-31"\ntest_start = "2022-06-02"\n'
                   'test_end = "2022-06-03"\narms = ["base"]\n')
    spec = load_job(job)
    Experiment(exp_db, spec, spec.settings(sep.Settings(db=tmp_path / "experiment.db")), lambda cfg: mock_llm).run()
    reflected = "SELECT date, method, trial, label, explanation FROM predictions WHERE method = 'reflect' " \
                "AND date < '2022-05-31' ORDER BY date, method, trial"  # 05-31's outcome is after train_end
    assert exp_db.execute(reflected).fetchall() == other.execute(reflected).fetchall() != []


def test_an_installed_plugin_adds_a_backend_and_a_format(memory, tmp_path, monkeypatch):
    """A package that declares `sep.backends` / `sep.formats` entry points is picked up by name,
    with no change to sep: here a distribution installed into a folder on sys.path."""
    from sep import backends, ingest
    from sep.settings import plugins

    site = tmp_path / "site"
    (site / "sep_plugin_demo-0.1.dist-info").mkdir(parents=True)
    (site / "sep_plugin_demo-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sep-plugin-demo\nVersion: 0.1\n")
    (site / "sep_plugin_demo-0.1.dist-info" / "entry_points.txt").write_text(
        "[sep.backends]\nechoes = sep_plugin_demo:backend\n\n[sep.formats]\ntabbed = sep_plugin_demo:tabbed\n")
    (site / "sep_plugin_demo.py").write_text('''
import sep
from sep import ingest

def backend(cfg, progress=None):
    return sep.mock_llm(lambda agent, prompt: "하락\\n" + prompt[-40:] if agent == "explain" else "- 요약 [t1]")

def _read(parsed, text, stock):
    for parsed.line, line in enumerate(text.splitlines()[1:], 2):
        day, close = line.split("\\t")
        ingest.add_price(parsed, ingest.PriceRow(stock, ingest.parse_date(day), None, None, None, float(close), None))

tabbed = ingest.PriceFormat("tabbed", lambda line: line == "day\\tclose", _read)
''')
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(backends.registry, "BACKENDS", dict(backends.BACKENDS))
    monkeypatch.setattr(ingest.base, "PRICE_READERS", dict(ingest.base.PRICE_READERS))
    plugins.cache_clear()
    try:
        assert "echoes" in backends.backends() and "echoes" not in ingest.price_formats()
        model = sep.make_llm(sep.Settings(backend="echoes"))
        assert model.name == "mock" and model.chat.script("summarize", "x") == "- 요약 [t1]"
        path = tmp_path / "005930.tsv"
        path.write_text("day\tclose\n2022-05-30\t67700\n2022-05-31\t67400\n", encoding="utf-8")
        report = sep.import_prices(memory, [path]).files[0]
        assert report.format == "tabbed" and report.rows_added == 2
    finally:
        plugins.cache_clear()


def test_openai_environment_is_honoured_when_sep_settings_are_unset(sample_memory, db_path, monkeypatch):
    """OPENAI_BASE_URL / OPENAI_API_KEY, as every OpenAI client reads them; SEP_* wins when both are set."""
    from conftest import run
    from fake_openai import FakeOpenAI, echo_reason

    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert (sep.Settings().base_url, sep.Settings().api_key) == ("http://openai.example/v1", "sk-openai")
    monkeypatch.setenv("SEP_API_KEY", "sk-sep")
    assert sep.Settings().api_key == "sk-sep" and sep.Settings(api_key="flag").api_key == "flag"
    sample_memory.conn.close()
    with FakeOpenAI(lambda kind, p: "- 요약" if kind == "summarize" else echo_reason(p, "하락")) as server:
        done = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--trials", "1", "--json", db=db_path,
                   env={"OPENAI_BASE_URL": server.base_url})
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.requests and json.loads(done.stdout)[0]["trials"][0]["label"] == "down"
