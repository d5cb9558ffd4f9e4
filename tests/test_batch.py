"""Batch jobs against a scripted OpenAI-compatible server with real latency, over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from sep.memory import open_memory
from sep.settings import Settings

from conftest import PLUMBING_MODEL, SEP, run
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
                                                          "errors": [], "complete": True, "offline": {}}


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


def stored_days(path: Path) -> int:
    """Days with a stored forecast, read without writing (another process is writing)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute("SELECT COUNT(DISTINCT date) FROM predictions").fetchone()[0]


def test_batch_survives_kill_9_and_resumes_without_duplicates(sample_db, tmp_path):
    with FakeOpenAI(lambda kind, prompt: WRONG_THEN_REFLECT[kind], latency=0.25) as server:
        job = write_job(tmp_path / "job.toml", server.base_url, concurrency=2)
        env = {**os.environ, "SEP_DB": str(sample_db)}
        proc = subprocess.Popen([*SEP, "batch", "run", str(job)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not stored_days(sample_db):  # kill once a day is stored
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        db = open_memory(sample_db)
        partial = db.execute("SELECT COUNT(DISTINCT date) FROM predictions").fetchone()[0]
        db.conn.close()
        assert 0 < partial < 7, "the kill should land mid-job"
        status = json.loads(run("batch", "status", str(job), "--json", db=sample_db).stdout)
        # a day's decision and its batch item are committed together: what is stored is what is done
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
    (JOB + "best_of = 2\n", "best_of is now best_of_n"),  # a job file older than the rename
    ('name = "x"\n', "needs stocks, start, end"),
    (JOB + "policy = 5\n", "policy must be a quoted path, not 5"),
    (JOB.replace('"2022-05-02"', '"2022-06-02"'), "start 2022-06-02 is after end 2022-05-31"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\n', "needs experiment.train_end, experiment.test_start, "
     "experiment.test_end"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-13"\ntest_start = "2022-05-19"\n'
     'test_end = "2022-05-31"\narms = ["bse"]\n', "[experiment] arms: unknown arm bse; choose among base, memory"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-13"\ntest_start = "2022-05-19"\n'
     'test_end = "2022-05-31"\nstep = 2\n', "unknown key experiment.step; allowed: train_start"),
    (JOB + '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-13"\ntest_start = "2022-05-19"\n'
     'test_end = "2022-05-31"\nreward_head = "linear"\n', "reward_head: input should be 'embedding' or 'model'"),
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


def test_a_new_experiment_key_at_its_default_keeps_an_experiments_identity(tmp_path):
    """A rerun resumes the experiment whose identity (hash) it shares. `reward_head` came after experiments
    had begun (jobs/learning.toml had trained for an hour): at its default it leaves their hash as it was,
    so they resume; set otherwise, it is another experiment."""
    from sep.experiment import identity
    from sep.jobs import load_job

    table = '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-13"\ntest_start = "2022-05-19"\ntest_end = "2022-05-31"\n'
    hashes = []
    for extra in ("", 'reward_head = "embedding"\n', 'reward_head = "model"\n'):
        path = tmp_path / "job.toml"
        path.write_text(JOB + table + extra, encoding="utf-8")
        job = load_job(path)
        config, fp = identity(job, job.settings(Settings()))
        hashes.append(fp)
        assert ("reward_head" in config) == (extra.endswith('"model"\n'))
    assert hashes[0] == hashes[1] != hashes[2]


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


# ---------------------------------------------------------------- offline: export → runner → ingest


def hashed_stance(text: str) -> str:
    """A stance by a hash of the text, so the stance stage's answers differ by request too."""
    import hashlib

    return ("positive", "neutral", "negative")[hashlib.sha256(text.encode()).digest()[0] % 3]


def hashed_script(kind: str, prompt: str) -> str:
    """Answers that differ by request (so a mix-up between requests shows): a summary citing the
    day's titles, and a label picked by a hash of the prompt, in the prompt's format."""
    import hashlib

    from fake_openai import cite_all, echo_reason

    if kind == "summarize":
        return cite_all(prompt, 3)
    if kind == "reflect":
        return "개별 소식의 부담을 가볍게 봤다. 다음에는 악재가 주는 부담을 더 크게 보겠다."
    items = "\n".join(line for line in prompt.splitlines() if line.startswith("[t"))
    up = (hashlib.sha256(items.encode()).digest()[0] % 2 == 0) != ("과거의 반성:" in prompt)  # a lesson flips it
    return echo_reason(prompt, "상승" if up else "하락")


def run_requests(server: FakeOpenAI, requests: Path, results: Path) -> list[dict]:
    """An independent runner: each line's body POSTed as it is, each answer written as OpenAI's batch
    output line (what vllm run-batch does)."""
    import httpx

    bodies = [json.loads(line) for line in requests.read_text().splitlines()]
    with results.open("w") as f:
        for n, r in enumerate(bodies):
            reply = httpx.post(server.base_url + "/chat/completions", json=r["body"], timeout=30)
            f.write(json.dumps({"id": f"b{n}", "custom_id": r["custom_id"], "error": None, "response": {
                "status_code": reply.status_code, "request_id": f"r{n}", "body": reply.json()}}) + "\n")
    return bodies


def stored(db_file: Path) -> dict:
    db = open_memory(db_file)
    return {
        "predictions": db.execute("SELECT stock, date, trial, method, label, explanation, confidence, correct, flags, "
                                  "prompt, evidence, candidates, attempts, asked_flags FROM predictions ORDER BY stock, date, method, trial"
                                  ).fetchall(),
        "reflections": db.execute("SELECT stock, date, trial, reflection, flags FROM reflections ORDER BY date, trial"
                                  ).fetchall(),
        "summaries": db.execute("SELECT stock, date, text_hash, summary, method, flags FROM summaries ORDER BY date"
                                ).fetchall(),
        "pairs": db.execute("SELECT date, prompt, chosen, rejected FROM pairs ORDER BY date").fetchall(),
        "stances": db.execute("SELECT text_key, model, prompt_version, p_positive, p_neutral, p_negative FROM stances "
                              "ORDER BY text_key").fetchall(),
    }


def test_offline_export_run_ingest_equals_a_live_batch_run(sample_db, tmp_path):
    """The same job, live (`sep batch run` against the server) and offline (export → the server as an
    independent runner → ingest, stage by stage): the same summaries, predictions, lessons, pairs and
    best-of-n forecasts; the exported bodies are the live requests; ingesting twice adds nothing."""
    import shutil

    offline_db = tmp_path / "offline.db"
    shutil.copy(sample_db, offline_db)
    with FakeOpenAI(hashed_script, stance=hashed_stance) as server:
        job = write_job(tmp_path / "t.toml", server.base_url, concurrency=4, best_of_n="2")
        live = run("batch", "run", str(job), "--json", db=sample_db)
        assert live.returncode == 0, live.stdout + live.stderr
        live_bodies = sorted(json.dumps(b, sort_keys=True) for b in server.requests)
        server.requests.clear()

        exported, stages = [], []
        for round_ in range(1, 10):
            requests, results = tmp_path / f"req{round_}.jsonl", tmp_path / f"res{round_}.jsonl"
            out = run("batch", "export", str(job), "--out", str(requests), "--json", db=offline_db)
            assert out.returncode == 0, out.stderr
            if json.loads(out.stdout)["requests"] == 0:
                break
            stages.append(sorted(json.loads(out.stdout)["stages"]))
            lines = run_requests(server, requests, results)
            last = results
            exported += [json.dumps(r["body"], sort_keys=True) for r in lines]
            assert all(r["method"] == "POST" and r["url"] == "/v1/chat/completions" for r in lines)
            assert all(r["custom_id"].startswith("t/005930/2022-05-") for r in lines)
            ingested = run("batch", "ingest", str(job), str(results), "--json", db=offline_db)
            assert ingested.returncode == 0, ingested.stderr
            assert json.loads(ingested.stdout)["stored"] == len(lines)
        status = json.loads(run("batch", "status", str(job), "--json", db=offline_db).stdout)

    assert status["complete"] and status["done"] == 7
    assert stages[0] == ["summary"] and stages[1] == ["stance"] and stages[2] == ["forecast"] and "reflect" in stages[3]
    assert sorted(exported) == live_bodies  # every body a live run sent, and nothing else
    assert any('"structured_outputs"' in b and '"logprobs": true' in b for b in exported)
    live_rows, offline_rows = stored(sample_db), stored(offline_db)
    for table in live_rows:
        assert offline_rows[table] == live_rows[table], table
    assert len(live_rows["predictions"]) > 7 and live_rows["reflections"] and live_rows["pairs"]

    again = run("batch", "ingest", str(job), str(last), "--json", db=offline_db)
    assert again.returncode == 0 and json.loads(again.stdout)["stored"] == 0
    assert stored(offline_db) == offline_rows


def test_offline_ingest_refuses_what_is_not_the_jobs_and_export_waits_for_results(sample_db, tmp_path):
    """Lines of another job, a truncated line, an unknown custom_id and another model's answer are
    counted and never stored (exit 1); a failed line is exported again; exporting before the
    previous stage is ingested is one sentence naming it (exit 2)."""
    with FakeOpenAI(hashed_script) as server:
        job = write_job(tmp_path / "t.toml", server.base_url)
        requests, results = tmp_path / "req.jsonl", tmp_path / "res.jsonl"
        assert run("batch", "export", str(job), "--out", str(requests), db=sample_db).returncode == 0
        early = run("batch", "export", str(job), "--out", str(tmp_path / "next.jsonl"), db=sample_db)
        assert early.returncode == 2 and "summary" in early.stderr and "ingest" in early.stderr
        assert len(early.stderr.strip().splitlines()) == 1 and not (tmp_path / "next.jsonl").exists()
        run_requests(server, requests, results)
    good = results.read_text().splitlines()
    first, second, third = (json.loads(line) for line in good[:3])
    other_model = json.loads(good[3])
    other_model["response"]["body"]["model"] = "another-model"
    foreign = {**first, "custom_id": first["custom_id"].replace("t/", "other-job/", 1)}
    unknown = {**second, "custom_id": "t/005930/2022-05-24/summary/7"}
    failed = {"id": "x", "custom_id": third["custom_id"], "response": None,
              "error": {"code": "server_error", "message": "CUDA out of memory"}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([json.dumps(foreign), json.dumps(unknown), good[4][:40], json.dumps(other_model),
                              json.dumps(failed), *good[5:]]) + "\n")
    out = run("batch", "ingest", str(job), str(bad), "--json", db=sample_db)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["refused"] == {"another job": 1, "unknown custom_id": 1, "unreadable": 1, "another model": 1}
    assert report["failed"] == 1 and report["stored"] == len(good) - 5
    assert report["missing"] == 4  # lines 0, 1, 3 and 4 of the export have no result (the failed one is re-exported)
    db = open_memory(sample_db)
    assert db.execute("SELECT COUNT(*) FROM batch_results WHERE status = 'ok'").fetchone()[0] == len(good) - 5
    assert not db.execute("SELECT 1 FROM batch_results WHERE custom_id LIKE 'other-job/%' OR custom_id LIKE '%/7'"
                          ).fetchone()
    text = run("batch", "ingest", str(job), str(bad), db=sample_db)
    assert text.returncode == 1 and "another model" in text.stdout and "refused" in text.stdout

    again = run("batch", "export", str(job), "--out", str(tmp_path / "again.jsonl"), "--again", "--json", db=sample_db)
    assert again.returncode == 0, again.stderr
    ids = [json.loads(line)["custom_id"] for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(json.loads(good[i])["custom_id"] for i in (0, 1, 2, 3, 4))
    other = tmp_path / "other.toml"
    other.write_text(job.read_text().replace('name = "t"', 'name = "other-job"'))
    assert run("batch", "ingest", str(other), str(results), db=sample_db).returncode == 1  # all its lines foreign

    for args, says in [(("export", str(job), "--out", str(tmp_path / "x.jsonl"), "--engine", "tgi"), "--engine"),
                       (("ingest", str(job), str(tmp_path / "nowhere.jsonl")), "Can't read"),
                       (("execute", str(job), "--out", str(tmp_path / "x.jsonl")), "JSONL")]:
        refused = run("batch", *args, db=sample_db)
        assert refused.returncode == 2 and says in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1


def test_the_embedded_model_executes_a_requests_file_as_a_live_run_answers(sample_db, tmp_path):
    """The offline path without a GPU, on the real embedded model: export → `sep batch execute` →
    ingest stores the same stances and forecast (label, reasons, confidence from the judged evidence,
    under the grammars rebuilt from the bodies' regexes) as `sep batch run` on the embedded model. One
    day, a one-day window and extractive summaries, to stay quick (the summary stage runs in the test
    above). Each answer's prompt is read from its first token (SEP_REPEATABLE): a re-ask's sampled words
    depend on the last bits of the logits, which llama.cpp's prompt cache changes with what was asked
    before (the live run asked stances first)."""
    import shutil

    job = tmp_path / "e.toml"
    job.write_text('name = "e"\nstocks = ["005930"]\nstart = "2022-05-31"\nend = "2022-05-31"\ntrials = 1\n'
                   'window_days = 1\n')
    offline_db = tmp_path / "offline.db"
    shutil.copy(sample_db, offline_db)
    extractive = {"SEP_SUMMARIZER": "extractive", "SEP_REPEATABLE": "1"}
    live = run("batch", "run", str(job), "--json", db=sample_db, env=extractive)
    assert live.returncode == 0, live.stderr
    stages = []
    for n in range(4):
        requests, results = tmp_path / f"r{n}.jsonl", tmp_path / f"a{n}.jsonl"
        out = json.loads(run("batch", "export", str(job), "--out", str(requests), "--json", db=offline_db,
                             env=extractive).stdout)
        if not out["requests"]:
            break
        stages.append(sorted(out["stages"]))
        done = run("batch", "execute", str(requests), "--out", str(results), db=offline_db)
        assert done.returncode == 0, done.stderr
        assert f"model {PLUMBING_MODEL}" in done.stdout  # the suite's embedded model; the job names none
        assert run("batch", "ingest", str(job), str(results), db=offline_db, env=extractive).returncode == 0
    live_rows, offline_rows = stored(sample_db), stored(offline_db)
    (asks,) = open_memory(offline_db).execute("SELECT attempts FROM predictions").fetchone()
    assert stages == [["stance"]] + [["forecast"]] * asks  # a forecast the gate flags is asked again, a stage each
    assert len(offline_rows["stances"]) == 5  # the day's five extractive points, each judged once
    assert offline_rows == live_rows
    (prediction,) = offline_rows["predictions"]
    assert prediction[4] in ("up", "down") and prediction[6] is not None  # the stances' log-probs came through


@pytest.mark.parametrize("shape", [
    ("상승", "하락"), ("Positive", "Negative"), ("상승", "하락", "판단:", "근거:", ("t1", "t57", "p3"), 3),
    ("Positive", "Negative", "Decision:", "Evidence:", (), 3), ("상승", "하락", "판단:", "", ("t1",), 2)])
def test_a_requests_files_regex_gives_back_the_answer_shape(shape):
    """`sep batch execute` constrains the embedded model with the shape the body's regex was written from."""
    from sep.shapes import AnswerShape

    original = AnswerShape(*shape)
    assert AnswerShape.from_regex(original.regex()) == original
    assert AnswerShape.from_regex("[0-9]+") is None
