"""Batch jobs against a scripted OpenAI-compatible server with real latency, over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sep.memory import open_memory
from sep.settings import Settings

from conftest import SEP, run
from fake_openai import FakeOpenAI

WRONG_THEN_REFLECT = {"summarize": "- 요약", "reflect": "금리 부담을 더 크게 봤어야 했다.", "explain": "상승\n기대감."}


def assert_each_day_complete(db, days: int = 7) -> None:
    """Every day stored once: trials 0..n-1 with no gap or repeat, a second trial only after a miss."""
    rows = db.execute("SELECT date, trial, correct FROM predictions WHERE method = 'reflect' ORDER BY date, trial").fetchall()
    by_day: dict[str, list] = {}
    for date, trial, correct in rows:
        by_day.setdefault(date, []).append((trial, correct))
    assert len(by_day) == days
    for trials in by_day.values():
        assert [t for t, _ in trials] == list(range(len(trials)))
        assert len(trials) == (1 if trials[0][1] else 2)


def write_job(path: Path, base_url: str, concurrency: int = 4, **extra: str) -> Path:
    lines = ['name = "t"', 'stocks = ["005930"]', 'start = "2022-05-23"', 'end = "2022-05-31"', "trials = 2",
             f"concurrency = {concurrency}", *[f"{k} = {v}" for k, v in extra.items()],
             "[llm]", f'base_url = "{base_url}"', 'model = "fake-model"']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def sample_db(sample_memory, db_path) -> Path:
    sample_memory.conn.close()
    return db_path


def test_batch_runs_every_day_once_within_the_concurrency(sample_db, tmp_path):
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], latency=0.05) as server:
        job = write_job(tmp_path / "job.toml", server.base_url, concurrency=3)
        done = run("batch", "run", str(job), "--json", db=sample_db)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert server.max_in_flight <= 3 and server.max_in_flight >= 2
        summaries = server.kinds().count("summarize")
    assert report["total"] == 7 and report["done"] == 7 and report["failed"] == 0
    db = open_memory(sample_db)
    text_days = db.execute("SELECT COUNT(DISTINCT date) FROM texts WHERE date BETWEEN '2022-05-18' AND '2022-05-31'").fetchone()[0]
    assert summaries == report["summaries"] <= text_days  # each (stock, day) summarised once, shared by windows
    assert_each_day_complete(db)
    status = run("batch", "status", str(job), "--json", db=sample_db)
    assert json.loads(status.stdout) | {"errors": []} == {"job": "t", "total": 7, "done": 7, "failed": 0, "pending": 0,
                                                          "errors": []}


def test_batch_and_experiment_keep_the_concurrency_in_flight(sample_db, tmp_path):
    """Both run through `sep.decide`: with concurrency 16 and a server that takes 0.3 s a request,
    at least 14 requests are in flight at once (the issue's acceptance), never more than 16."""
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], latency=0.3) as server:
        job = write_job(tmp_path / "job.toml", server.base_url, concurrency=16).read_text()
        (tmp_path / "job.toml").write_text(job.replace('start = "2022-05-23"', 'start = "2022-03-02"'))
        done = run("batch", "run", str(tmp_path / "job.toml"), "--json", db=sample_db)
        assert done.returncode == 0, done.stderr
        batch_peak = server.max_in_flight
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], latency=0.3) as server:
        (tmp_path / "exp.toml").write_text(
            f'name = "walk"\nstocks = ["005930"]\nstart = "2022-03-02"\nend = "2022-05-31"\ntrials = 2\n'
            f'concurrency = 16\n[llm]\nbase_url = "{server.base_url}"\nmodel = "other-model"\n'
            '[experiment]\ntrain_start = "2022-03-02"\ntrain_end = "2022-04-15"\ntest_start = "2022-04-20"\n'
            'test_end = "2022-05-31"\narms = ["base", "memory"]\n')
        done = run("experiment", "run", str(tmp_path / "exp.toml"), "--json", db=sample_db)
        assert done.returncode == 0, done.stderr[-3000:]
        experiment_peak = server.max_in_flight
    assert 14 <= batch_peak <= 16 and 14 <= experiment_peak <= 16, (batch_peak, experiment_peak)


def test_batch_survives_kill_9_and_resumes_without_duplicates(sample_db, tmp_path):
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], latency=0.25) as server:
        job = write_job(tmp_path / "job.toml", server.base_url, concurrency=2)
        env = {**os.environ, "SEP_DB": str(sample_db)}
        proc = subprocess.Popen([*SEP, "batch", "run", str(job)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.kinds().count("explain") < 5:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        db = open_memory(sample_db)
        partial = db.execute("SELECT COUNT(DISTINCT date) FROM predictions").fetchone()[0]
        db.conn.close()
        assert 0 < partial < 7, "the kill should land mid-job"
        status = json.loads(run("batch", "status", str(job), "--json", db=sample_db).stdout)
        assert status["done"] == partial and status["pending"] == 7 - partial
        again = run("batch", "run", str(job), "--json", db=sample_db)
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
    assert report["skipped"] == partial and report["done"] == 7 - partial
    db = open_memory(sample_db)
    assert_each_day_complete(db)  # nothing lost, nothing twice
    misses = db.execute("SELECT COUNT(*) FROM predictions WHERE trial = 0 AND correct = 0").fetchone()[0]
    assert db.execute("SELECT COUNT(*) FROM reflections").fetchone()[0] == misses


def test_bad_job_files_exit_2(sample_db, tmp_path):
    (tmp_path / "bad.toml").write_text('name = "x"\nstocks = ["005930"]\nstart = "2022-05-31"\nend = "2022-05-01"\n')
    assert run("batch", "run", str(tmp_path / "bad.toml"), db=sample_db).returncode == 2
    (tmp_path / "typo.toml").write_text('name = "x"\nstocks = ["005930"]\nstart = "2022-05-02"\nend = "2022-05-03"\nconcurency = 4\n')
    typo = run("batch", "run", str(tmp_path / "typo.toml"), db=sample_db)
    assert typo.returncode == 2 and "concurency" in typo.stderr
    assert run("batch", "status", str(tmp_path / "missing.toml"), db=sample_db).returncode == 2


JOB = 'name = "x"\nstocks = ["005930"]\nstart = "2022-05-02"\nend = "2022-05-31"\n'


@pytest.mark.parametrize("text, says", [
    (JOB + "window_days = 0\n", "window_days: input should be greater than or equal to 1 (got 0)"),
    (JOB + "trials = 2.7\n", "trials: input should be a valid integer (got 2.7)"),  # not truncated to 2
    (JOB + '[llm]\nmodle = "m"\n', "unknown key llm.modle; allowed: base_url, model"),
    (JOB.replace('["005930"]', "[]"), "stocks: list should have at least 1 item"),
    (JOB.replace('["005930"]', "[5930]"), "stocks: input should be a valid string (got 5930)"),
    (JOB + "concurrency = 0\n", "concurrency: input should be greater than or equal to 1"),
    (JOB + 'dedup = "yes"\n', "dedup: input should be a valid boolean"),
    ('name = "x"\n', "needs stocks, start, end"),
    (JOB + "policy = 5\n", "policy must be a quoted path, not 5"),
    (JOB.replace('"2022-05-02"', '"2022-06-02"'), "start 2022-06-02 is after end 2022-05-31"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\n', "needs experiment.train_end, experiment.test_start, "
     "experiment.test_end"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-13"\ntest_start = "2022-05-19"\n'
     'test_end = "2022-05-31"\narms = ["bse"]\n', "[experiment] arms: unknown arm bse; choose among base, memory"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-13"\ntest_start = "2022-05-19"\n'
     'test_end = "2022-05-31"\nstep = 2\n', "unknown key experiment.step; allowed: train_start"),
])
def test_job_files_are_validated_strictly(tmp_path, text, says):
    from sep.jobs import load_job
    from sep.errors import BadInput

    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        load_job(path)
    assert says in str(caught.value) and str(caught.value).count(". ") <= 1  # one sentence


def test_every_job_key_is_documented_in_jobs_readme():
    """`sep.jobs.Job` is the one schema; jobs/README.md's table must name each of its keys."""
    import re
    from pathlib import Path

    from sep.jobs import ExperimentTable, Job, LLMTable

    table = (Path(__file__).resolve().parent.parent / "jobs" / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_]+)`", table.split("| key | meaning |")[1].split("\n\n")[0]))
    assert set(Job.model_fields) | set(LLMTable.model_fields) | set(ExperimentTable.model_fields) <= documented | {"llm", "experiment"}
    assert "[llm]" in table and "[experiment]" in table


def test_a_valid_job_file_still_loads(tmp_path):
    from sep.jobs import load_job

    path = tmp_path / "job.toml"
    path.write_text(JOB.replace('"2022-05-02"', "2022-05-02") + '[llm]\nmodel = "m"\n', encoding="utf-8")  # a TOML date
    job = load_job(path)
    assert (job.start, job.end, job.model, job.stocks) == ("2022-05-02", "2022-05-31", "m", ["005930"])
    assert job.trials is None and job.settings(Settings()).trials == Settings().trials  # unset: the settings' default


def test_a_job_owns_its_results(sample_db, tmp_path):
    """Job B with another model on the same days does its own work, and eval --job B scores B's answers."""
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], model="model-a") as a, \
            FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], model="model-b") as b:
        job_a = write_job(tmp_path / "a.toml", a.base_url)
        assert run("batch", "run", str(job_a), db=sample_db).returncode == 0
        text = (tmp_path / "a.toml").read_text().replace('name = "t"', 'name = "t-b"')
        job_b = tmp_path / "b.toml"
        job_b.write_text(text.replace(a.base_url, b.base_url).replace('"fake-model"', '"model-b"'))
        done = run("batch", "run", str(job_b), "--json", db=sample_db)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["skipped"] == 0 and report["done"] == 7 and report["requests"] > 0 and b.requests
    status = json.loads(run("batch", "status", str(job_b), "--json", db=sample_db).stdout)
    assert status["done"] == 7
    scored = json.loads(run("eval", "--job", str(job_b), "--json", db=sample_db).stdout)
    assert scored["forecast"]["model"].startswith("model-b@")
    db = open_memory(sample_db)
    assert {m.split("@")[0] for (m,) in db.execute("SELECT DISTINCT model FROM predictions")} == {"fake-model", "model-b"}


def test_a_changed_job_file_is_refused_until_renamed_or_restarted(sample_db, tmp_path):
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind]) as server:
        job = write_job(tmp_path / "job.toml", server.base_url)
        assert run("batch", "run", str(job), db=sample_db).returncode == 0
        job.write_text(job.read_text().replace("trials = 2", "trials = 3"))
        refused = run("batch", "run", str(job), db=sample_db)
        assert refused.returncode == 2 and "trials changed" in refused.stderr and "--restart" in refused.stderr
        redone = run("batch", "run", str(job), "--restart", "--json", db=sample_db)
        assert redone.returncode == 0, redone.stderr
        assert json.loads(redone.stdout)["skipped"] == 0
        again = run("batch", "run", str(job), "--json", db=sample_db)
        assert json.loads(again.stdout)["skipped"] == 7  # unchanged now: every day is done
    never = tmp_path / "never.toml"
    never.write_text(job.read_text().replace('name = "t"', 'name = "never"'))
    not_run = run("eval", "--job", str(never), db=sample_db)
    assert not_run.returncode == 2 and "has not run" in not_run.stderr


def test_every_shipped_job_file_loads():
    """The job files the docs and --help name are valid, and the experiment one has its table."""
    from sep.jobs import load_job

    jobs = {p.name: load_job(p) for p in sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.toml"))}
    assert {"sample.toml", "sn2.toml", "experiment.toml"} <= set(jobs)
    assert jobs["experiment.toml"].experiment.train_end < jobs["experiment.toml"].experiment.test_start
