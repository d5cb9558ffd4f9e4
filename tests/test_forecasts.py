"""Honest forecasts: the headline scores only what was known at D, training is split in time,
and a walk-forward experiment scores every arm on days after its training data.

The model outside the project is a scripted OpenAI-compatible server on 127.0.0.1; a coin-flip
script (a hash of the prompt) is the model with no skill, which must look like a coin.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sep.evaluate import Decision, backtest, binomial_p, bootstrap_ci, accuracy, calibration, mcnemar_p
from sep.memory import open_memory

from conftest import run
from fake_openai import FakeOpenAI, echo_reason, kind_of, known_skill


COIN_SEED = "7"  # a fair coin's 95% interval misses 0.5 for about 1 seed in 20; fixed so the test is repeatable
_asked: dict[str, int] = {}


DIGITS_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def coin(kind: str, prompt: str) -> str:
    """No skill at all: the label is a seeded hash of the prompt (a retry's prompt differs: a new flip)."""
    if kind == "summarize":
        return "- 삼성전자 관련 보도 [요약]"
    if kind == "reflect":  # a new lesson every time (one day's retries are sequential), so each retry flips anew
        _asked[prompt] = _asked.get(prompt, 0) + 1
        tag = hashlib.sha256(f"{_asked[prompt]}{prompt}".encode()).hexdigest()[:6].translate(DIGITS_AS_LETTERS)
        return f"그 소식보다 반대 방향을 봤어야 했다 ({tag})."  # no digits: a number no input holds is flagged
    heads = hashlib.sha256((COIN_SEED + prompt).encode()).digest()[0] % 2
    return echo_reason(prompt, "상승" if heads else "하락")  # a grounded-looking reason: only the label is a coin


def _sample_db(path: Path):
    from sep.ingest import import_prices, import_texts
    from sep.sample import sample_files

    db = open_memory(path)
    prices, texts = sample_files()
    import_prices(db, prices)
    import_texts(db, texts)
    return db


@pytest.fixture(scope="module")
def coin_job(tmp_path_factory) -> tuple[Path, Path, str]:
    """A 3-trial batch of a coin-flip server over 74 trading days (the issue's measurement)."""
    d = tmp_path_factory.mktemp("coin")
    _sample_db(d / "sep.db").conn.close()
    _asked.clear()  # the lessons (and so the prompts, and so the flips) must not depend on tests run before
    server = FakeOpenAI(coin)
    server.__enter__()
    job = d / "coin.toml"
    # one request at a time: with more, whether a day recalls an earlier day's lesson depends on thread
    # timing, the prompts change, and so would the seeded coin's flips
    job.write_text(f'name = "coin"\nstocks = ["005930"]\nstart = "2022-02-14"\nend = "2022-05-31"\ntrials = 3\n'
                   f'concurrency = 1\n[llm]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n')
    done = run("batch", "run", str(job), db=d / "sep.db")
    assert done.returncode == 0, done.stderr
    yield d / "sep.db", job, server.base_url
    server.__exit__(None, None, None)


def test_a_coin_flip_server_looks_like_a_coin(coin_job):
    db_path, job, _ = coin_job
    out = run("eval", "--job", str(job), "--json", db=db_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["n"] == 74 and r["forecast"]["method"] == "reflect"
    lo, hi = r["accuracy_ci95"]
    assert lo < 0.5 < hi, r["accuracy"]                 # the headline of a coin contains a coin
    assert r["p_vs_coin"] > 0.05 and r["mcc_ci95"][0] < 0 < r["mcc_ci95"][1]
    # the retries that were told the outcome look brilliant; they are hindsight, reported apart
    assert r["hindsight"]["accuracy"] > 0.75 and "not a forecast" in r["hindsight"]["note"]
    # a coin's annualised Sharpe over n days has a standard error of about sqrt(252 / n): 1.85 here, so 99% of
    # coins stay within 2.58 of them (4.8); the issue measured 6.8 on the last trial, hindsight traded
    assert abs(r["backtest"]["gross"]["sharpe"] or 0) < 2.58 * (252 / r["n"]) ** 0.5
    text = run("eval", "--job", str(job), db=db_path).stdout
    assert "hindsight (not a forecast)" in text and "sep (headline)" in text


def test_a_reward_run_scored_on_its_own_days_is_in_sample(coin_job, tmp_path, tiny):
    """Train a reward model (on the tiny Qwen2: any base scores a server's text) on days up to
    2022-04-15; best-of-n on 04-01 is in-sample, on 05-02 it is a forecast."""
    db_path, job, base_url = coin_job
    rm = tmp_path / "rm"
    done = run("train", "reward", "--from-memory", "--end", "2022-04-15", "--max-steps", "1", "--out", str(rm),
               "--base-model", str(tiny[0]), "--json", db=db_path)  # a server answers: any base scores its text
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["data_end"] == "2022-04-15" and metrics["stocks"] == ["005930"]
    assert metrics["eval_first_day"] <= "2022-04-15"  # held out: the last pairs in time, inside the range
    assert "majority_accuracy" in metrics and metrics["labels_after"]["up"] == metrics["labels_after"]["down"]
    config = json.loads((rm / "config.json").read_text())
    assert config["data_end"] == "2022-04-15"
    db = open_memory(db_path)
    assert db.execute("SELECT data_end FROM runs WHERE out = ?", [str(rm.resolve())]).fetchone()[0] == "2022-04-15"
    for day, inside in (("2022-04-01", True), ("2022-05-02", False)):
        p = run("predict", "--stock", "005930", "--date", day, "--best-of", "2", "--reward", str(rm), "--base-url",
                base_url, "--window-days", "2", "--json", db=db_path)  # short prompts: the reward model reads them on CPU
        assert p.returncode == 0, p.stderr[-3000:]
        assert json.loads(p.stdout)["in_sample"] is inside
    r = json.loads(run("eval", "--stock", "005930", "--method", "best-of-n", "--json", db=db_path).stdout)
    assert r["n"] == 1 and r["start"] == "2022-05-02"           # the headline never holds the in-sample day
    assert r["in_sample"]["n"] == 1


def test_training_uses_only_days_whose_outcome_was_known_by_end(memory):
    from sep.ingest import import_prices
    from sep.sample import sample_files
    from sep.train import select_days

    import_prices(memory, sample_files()[0])
    rows = [{"stock": "005930", "date": d, "prompt": "p", "completion": "상승"}
            for d in ("2022-05-27", "2022-05-30", "2022-05-31", "2022-06-02")]
    kept, span = select_days(memory, rows, "2022-05-28", "2022-06-01")
    # 05-27 is before start; 05-31's target is 06-02 (after end, 06-01 was a holiday); 06-02 is after end
    assert [r["date"] for r in kept] == ["2022-05-30"]
    assert span == {"stocks": ["005930"], "data_start": "2022-05-28", "data_end": "2022-06-01"}
    _, open_ended = select_days(memory, rows, None, None)
    assert open_ended["data_end"] == "2022-06-03"  # the latest target day any row's outcome came from


def test_labels_are_balanced_and_the_held_out_pairs_are_the_last_days():
    from sep.train import balance, time_split

    rows = [{"completion": "상승\n이유", "date": f"2022-05-{i:02d}"} for i in range(1, 8)]
    rows += [{"completion": "하락\n이유", "date": f"2022-05-{i:02d}"} for i in range(8, 11)]
    kept, report = balance(rows, seed=0)
    assert report["labels_before"] == {"up": 7, "down": 3, "none": 0}
    assert report["labels_after"] == {"up": 3, "down": 3, "none": 0} and len(kept) == 6
    assert [r["date"] for r in kept] == sorted(r["date"] for r in kept)  # time order kept
    same, unbalanced = balance(rows, seed=0, enabled=False)
    assert len(same) == 10 and unbalanced["balanced"] is False
    shuffled = rows[::-1]
    train, held = time_split(shuffled, 0.2)
    assert [r["date"] for r in held] == ["2022-05-09", "2022-05-10"]
    assert max(r["date"] for r in train) < min(r["date"] for r in held)


def test_grpo_learns_from_every_day_not_only_pairs(memory):
    from sep.train import day_rows

    for i, day in enumerate(("2022-05-02", "2022-05-03", "2022-05-04")):
        memory.execute("INSERT INTO predictions (stock, date, trial, target_day, actual, label, correct, response, "
                       "prompt, model, created_at) VALUES ('005930', ?, 0, '2022-05-09', 'up', 'up', 1, 'r', ?, 'm', 'n')",
                       [day, f"prompt {i}"])
    memory.execute("INSERT INTO pairs (stock, date, prompt, chosen, rejected, chosen_label, rejected_label, model, "
                   "created_at) VALUES ('005930', '2022-05-02', 'prompt 0', '상승', '하락', 'up', 'down', 'm', 'n')")
    rows = day_rows(memory, None)
    assert [r["date"] for r in rows] == ["2022-05-02", "2022-05-03", "2022-05-04"]


def test_signal_score_is_asked_for_and_read_only_from_its_line():
    from sep.llm import ChatFormat
    from sep.models import GEMMA_TEMPLATE
    from sep.train import parse_signal, with_signal_instruction

    assert parse_signal("2022-05-12 실적 발표 이후 외국인 매도") is None   # today's parser read -5 from the date
    assert parse_signal("상승\n3분기 영업이익 10% 증가\n점수: 7") == 7.0
    assert parse_signal("Positive\nrevenue up 12%\nScore: -4") == -4.0
    assert parse_signal("점수: 42") is None
    chat = with_signal_instruction([{"role": "system", "content": "분석가"}, {"role": "user", "content": "삼성전자 뉴스 요약"}])
    assert chat[0]["content"] == "분석가" and chat[1]["content"].endswith("점수: N' 형식으로 -10(강한 하락)부터 10(강한 상승)까지의 정수 점수 하나만 쓰세요.")
    prompt = ChatFormat.of(GEMMA_TEMPLATE).prompt(chat)
    assert "점수: N" in prompt.split("<end_of_turn>")[1] and prompt.endswith("<start_of_turn>model\n")


def test_both_rewards_count_in_their_own_scale():
    from sep.train import mixed_reward

    # a 1% return against a typical 1.5% move, a reward-model logit of 4 against a spread of 5
    right_but_disliked = mixed_reward(0.01, -4.0, 0.015, 5.0, 0.5)
    wrong_but_liked = mixed_reward(-0.01, 4.0, 0.015, 5.0, 0.5)
    assert right_but_disliked > 0 > wrong_but_liked      # the market still decides; unscaled, the logit drowned it
    assert mixed_reward(0.0, 4.0, 0.015, 5.0, 0.5) > 0   # and the model still counts


def test_best_of_n_answers_the_label_with_the_larger_mass():
    from sep.predict import pick

    label, best, conf = pick([2.0, 1.9, 1.9], ["up", "down", "down"])
    assert label == "down" and best == 1 and conf > 0.5   # the argmax alone said up with 0.35
    assert pick([1.0, 1.0], [None, None]) == (None, 0, 0.5)


def test_best_of_n_without_a_reward_model_answers_a_label_some_candidate_argued():
    from sep.predict import vote

    # two derived answers say up, their evidence gives P(up) 0.3 and 0.45 (ties the model broke), one is unparsable:
    # the mean P(up) is 0.417, and before this fix the forecast was "down", a label no candidate argued (a crash)
    label, best, conf = vote(["up", None, "up"], [0.3, None, 0.45])
    assert label == "up" and best == 2 and conf == pytest.approx((0.3 + 0.5 + 0.45) / 3)
    assert vote(["up", "down", "down"], [0.6, 0.9, 0.9])[:2] == ("down", 1)   # both answered: the mean decides
    assert vote([None, None], [None, None]) == (None, 0, 0.5)


def test_calibration_and_exact_tests_on_known_cases():
    ds = [Decision("A", f"2022-05-0{i}", "", "up" if i % 2 else "down", "up", 0.9, 0.01) for i in range(1, 5)]
    cal = calibration(ds)
    assert cal["brier"] == pytest.approx((0.1 ** 2 + 0.9 ** 2) / 2)
    assert cal["ece"] == pytest.approx(0.4) and sum(b["n"] for b in cal["reliability"]) == 4
    assert binomial_p(8, 10, 0.8) == pytest.approx(1.0)            # exactly the majority rate: no evidence
    assert binomial_p(10, 10, 0.5) == pytest.approx(2 / 1024)
    assert mcnemar_p([True] * 6, [False] * 6) == pytest.approx(2 / 64) and mcnemar_p([True], [True]) == 1.0


def test_bootstrap_resamples_whole_dates():
    # two stocks per date that always move and get scored together: resampled accuracies come in steps of 2/n
    hits = [(f"2022-05-{d:02d}", "up", "up" if d % 3 else "down") for d in range(1, 11) for _ in range(2)]
    ci = bootstrap_ci(hits, accuracy)
    assert ci is not None and all(round(x * 20) % 2 == 0 for x in ci)


def test_costs_and_long_only():
    days = [Decision("005930", "2022-05-02", "", "down", "down", 0.9, -0.02),
            Decision("005930", "2022-05-03", "", "up", "up", 0.8, 0.01)]
    bt = backtest(days)
    assert bt["cost_bps"] == 23.0                                    # KRX: sell-side tax + commission
    assert bt["gross"]["cumulative_return"] == pytest.approx(1.02 * 1.01 - 1)
    assert bt["net"]["cumulative_return"] == pytest.approx((1.02 - 0.0023) * (1.01 - 0.0023) - 1)
    long_only = backtest(days, long_only=True, cost_bps=0)
    assert long_only["positions"] == 1 and long_only["gross"]["cumulative_return"] == pytest.approx(0.01)
    assert backtest([Decision("AAPL", "2022-05-02", "", "up", "up", 0.9, 0.01)])["cost_bps"] == 2.0


def test_a_text_after_the_close_counts_for_the_next_day(memory, tmp_path):
    from sep.ingest import import_prices, import_texts
    from sep.sample import sample_files
    from sep.window import decision_window

    import_prices(memory, sample_files()[0])
    rows = [{"stock": "005930", "published_at": "2022-05-30T15:10:00+09:00", "title": "장중 외국인 순매수"},
            {"stock": "005930", "published_at": "2022-05-30T16:05:00+09:00", "title": "장 마감 후 실적 발표"},
            {"stock": "005930", "date": "2022-05-30", "title": "날짜만 있는 보도"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    import_texts(memory, [tmp_path / "t.jsonl"])
    on_30 = [t.title for t in decision_window(memory, "005930", "2022-05-30", 1).texts]
    on_31 = [t.title for t in decision_window(memory, "005930", "2022-05-31", 1).texts]
    assert sorted(on_30) == sorted(["장중 외국인 순매수", "날짜만 있는 보도"])
    assert on_31 == ["장 마감 후 실적 발표"]


def test_a_holiday_sharing_a_trading_days_interval_is_scored_once(tmp_path):
    db_path = tmp_path / "sep.db"
    _sample_db(db_path).conn.close()
    with FakeOpenAI(lambda kind, prompt: "하락\n금리 부담" if kind == "explain" else "- 요약") as server:
        for day in ("2022-05-31", "2022-06-01"):  # 06-01 (election day) shares 05-31's interval to 06-02
            done = run("reflect", "--stock", "005930", "--date", day, "--trials", "1", "--base-url", server.base_url,
                       db=db_path)
            assert done.returncode == 0, done.stderr
    r = json.loads(run("eval", "--stock", "005930", "--json", db=db_path).stdout)
    assert r["n"] == 1 and r["scored_once"] == 1


def experiment_job(path: Path, base_url: str, train_start: str, train_end: str, test_start: str, arms: list[str],
                   trials: int = 2) -> Path:
    """A one-fold experiment on the sample's 005930, up to 2022-05-31, answered by `base_url`."""
    path.write_text(f'name = "walk"\nstocks = ["005930"]\nstart = "{train_start}"\nend = "2022-05-31"\n'
                    f'trials = {trials}\n[llm]\nbase_url = "{base_url}"\nmodel = "fake-model"\n[experiment]\n'
                    f'train_start = "{train_start}"\ntrain_end = "{train_end}"\ntest_start = "{test_start}"\n'
                    f'test_end = "2022-05-31"\narms = {json.dumps(arms)}\n')
    return path


def test_an_experiment_counts_the_flags_of_the_answers_it_withheld(tmp_path):
    """A server whose every explanation invents a date: each test-day answer is withheld, and the arm
    says why per flag (the experiment keeps each forecast's flags), in JSON and in the table."""
    db_path = tmp_path / "sep.db"
    _sample_db(db_path).conn.close()

    def script(kind: str, prompt: str) -> str:
        answer = coin(kind, prompt)
        return answer + " 2031-01-05에도 오른다." if kind == "explain" else answer

    with FakeOpenAI(script) as server:
        job = experiment_job(tmp_path / "exp.toml", server.base_url, "2022-05-23", "2022-05-24", "2022-05-27", ["base"],
                             trials=1)
        done = run("experiment", "run", str(job), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
        base = json.loads(done.stdout)["arms"]["base"]
        shown = run("experiment", "show", "1", db=db_path)
    assert base["n"] == 3 and base["answered"] == 0 and base["reasked"] == 3  # asked 3 times each, flagged each time
    assert base["flags"] == {"invented_dates": 3, "invented_numbers": 3}  # the date's numbers are in no input either
    assert "withheld by the gate (per flag): base: invented_dates 3, invented_numbers 3" in " ".join(shown.stdout.split())
    assert base["reasked_flags"] == {"invented_dates": 6, "invented_numbers": 6}  # each replaced ask, by its flags
    assert ("asked again, still without the outcome: base 3 (the asks it replaced were flagged: invented_dates 6, "
            "invented_numbers 6)") in " ".join(shown.stdout.split())


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_forecast_the_gate_flags_is_asked_again_without_the_outcome(tmp_path, attempts):
    """A server whose first answer to each prompt invents a date and whose later answers don't: with
    re-asks (the default, 3) the forecast is the clean second answer, stored as asked twice and
    scored; with SEP_FORECAST_ATTEMPTS=1 it is withheld. No re-ask is shown the outcome."""
    db_path = tmp_path / "sep.db"
    _sample_db(db_path).conn.close()
    asked: dict[str, int] = {}
    prompts: list[str] = []

    def script(kind: str, prompt: str) -> str:
        if kind != "explain":
            return coin(kind, prompt)
        asked[prompt] = asked.get(prompt, 0) + 1
        prompts.append(prompt)
        return echo_reason(prompt, "하락") + (" 2031-01-05에도 내린다." if asked[prompt] == 1 else "")

    with FakeOpenAI(script) as server:
        done = run("reflect", "--stock", "005930", "--date", "2022-05-24", "--trials", "1", "--base-url",
                   server.base_url, "--json", db=db_path, env={"SEP_FORECAST_ATTEMPTS": str(attempts)})
    assert done.returncode == 0, done.stderr
    db = open_memory(db_path)
    (label, flags, asks, why), = db.execute("SELECT label, flags, attempts, asked_flags FROM predictions "
                                            "WHERE trial = 0").fetchall()
    assert len(prompts) == min(attempts, 2) and len(set(prompts)) == 1  # the same prompt: no outcome, no lesson
    assert "실제" not in prompts[0] and "actual" not in prompts[0].lower()
    if attempts == 1:
        assert asks == 1 and "invented_dates" in flags and why is None
    else:
        assert (label, flags, asks) == ("down", None, 2)
        first, second = why.split(";")  # each ask's flags, in order: why it was asked again, kept
        assert "invented_dates" in first.split(",") and second == ""
    r = json.loads(run("eval", "--stock", "005930", "--json", db=db_path).stdout)
    assert r["n"] == 1 and r["answered"] == (attempts > 1)


def test_experiment_with_base_and_memory_scores_only_days_after_training(tmp_path):
    db_path = tmp_path / "sep.db"
    _sample_db(db_path).conn.close()
    with FakeOpenAI(coin) as server:
        job = experiment_job(tmp_path / "exp.toml", server.base_url, "2022-05-02", "2022-05-16", "2022-05-19",
                             ["base", "memory"])
        done = run("experiment", "run", str(job), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
        r = json.loads(done.stdout)
        requests = len(server.requests)
        again = run("experiment", "run", str(job), "--json", db=db_path)
        assert again.returncode == 0 and json.loads(again.stdout)["arms"] == r["arms"]
        assert len(server.requests) == requests  # resumed: nothing asked twice
    assert set(r["arms"]) == {"base", "memory"} and set(r["baselines"]) == {"majority", "momentum", "random", "stance_only"}
    assert r["train"]["end"] == "2022-05-16" and r["test"]["start"] == "2022-05-19" and r["test"]["days"] == 9
    for arm in r["arms"].values():
        assert arm["n"] == 9 and {"accuracy_ci95", "p_vs_coin", "p_vs_majority", "brier", "ece", "backtest"} <= set(arm)
    assert "mcnemar_p" in r["arms"]["memory"]["vs_base"]
    db = open_memory(db_path)
    days = [d for (d,) in db.execute("SELECT DISTINCT date FROM experiment_forecasts").fetchall()]
    assert days and min(days) > "2022-05-16"
    # the memory arm recalled only lessons whose outcome was known by D
    lessons = db.execute("SELECT MAX(target_day) FROM reflections").fetchone()[0]
    assert lessons <= "2022-05-16"
    shown = run("experiment", "show", str(r["id"]), db=db_path)
    assert shown.returncode == 0 and "memory" in shown.stdout and "baseline: majority" in shown.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(job.read_text().replace('test_start = "2022-05-19"', 'test_start = "2022-05-10"'))
    refused = run("experiment", "run", str(bad), db=db_path)
    assert refused.returncode == 2 and "train_end < test_start" in refused.stderr


def test_arms_that_train_say_so_when_the_train_extra_is_missing(sample_memory, monkeypatch):
    import sys

    from sep.errors import BadInput
    from sep.experiment import Experiment
    from sep.jobs import ExperimentTable, Job
    from sep.settings import Settings

    monkeypatch.setitem(sys.modules, "trl", None)  # as if the extra were not installed
    exp = ExperimentTable(train_start="2022-05-02", train_end="2022-05-13", test_start="2022-05-19",
                          test_end="2022-05-31", arms=["base", "sft"])
    job = Job(name="x", stocks=["005930"], start="2022-05-02", end="2022-05-31", experiment=exp)
    with pytest.raises(BadInput, match=r"Arms sft need the train extra .*pip install"):
        Experiment(sample_memory, job, Settings(), lambda cfg: None).run()


def test_walk_forward_folds_retrain_on_what_each_fold_could_know_less_the_embargo(tmp_path):
    from sep.jobs import load_job
    from sep.experiment import folds

    db_path = tmp_path / "sep.db"
    _sample_db(db_path).conn.close()
    with FakeOpenAI(coin) as server:
        job = tmp_path / "roll.toml"
        job.write_text(f'name = "roll"\nstocks = ["005930"]\nstart = "2022-05-02"\nend = "2022-05-31"\ntrials = 2\n'
                       f'[llm]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n'
                       '[experiment]\ntrain_start = "2022-05-02"\ntrain_end = "2022-05-16"\n'
                       'test_start = "2022-05-19"\ntest_end = "2022-05-31"\narms = ["memory"]\nfold_days = 4\n')
        done = run("experiment", "run", str(job), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
    db = open_memory(db_path)
    plan = folds(db, ["005930"], load_job(job).experiment)
    # embargo 1: each later fold learns from outcomes known by the trading day before its first test day
    assert [b.train_end for b in plan] == ["2022-05-16", "2022-05-24", "2022-05-30"]
    assert [sorted(d for _, d in b.days)[0] for b in plan] == ["2022-05-19", "2022-05-25", "2022-05-31"]
    assert [len(b.days) for b in plan] == [4, 4, 1]
    r = json.loads(done.stdout)
    assert [f["days"] for f in r["folds"]] == [4, 4, 1] and sum(f["arms"]["memory"]["n"] for f in r["folds"]) == 9
    reflected = {d for (d,) in db.execute("SELECT DISTINCT date FROM predictions WHERE method = 'reflect'").fetchall()}
    # test days of earlier blocks became training data once known; the last block's day never did
    assert "2022-05-19" in reflected and "2022-05-31" not in reflected
    assert r["arms"]["memory"]["n"] == 9


def test_the_forecast_is_greedy_and_a_retry_samples(tmp_path):
    db_path = tmp_path / "sep.db"
    _sample_db(db_path).conn.close()
    with FakeOpenAI(lambda kind, prompt: "상승\n기대감" if kind == "explain" else "- 요약" if kind == "summarize"
                    else "금리를 봤어야 했다.") as server:
        done = run("reflect", "--stock", "005930", "--date", "2022-05-31", "--trials", "2", "--base-url",
                   server.base_url, db=db_path)
        assert done.returncode == 0, done.stderr
        explains = [r for r in server.requests if kind_of(r) == "explain"]
    # the greedy forecast is ungrounded ("기대감" is in no input), so it is asked twice more, sampled;
    # then the hindsight retry samples too, each with its own seed
    assert [r.get("temperature") for r in explains] == [0.0, 0.7, 0.7, 0.7]
    assert len({r.get("seed") for r in explains[1:]}) == 3
    assert "trial 0 (forecast)" in done.stdout and "hindsight" in done.stdout



def test_a_server_of_known_skill_is_measured_exactly(tmp_path):
    """A server right with probability 0.7 per (stock, day), decided by a hash of the day: the batch
    headline (four requests in flight) and an experiment's base arm both report exactly the share of
    days the hash made right, end to end through real HTTP."""
    from sep.window import decision_window

    from sep.decide import decidable_days

    db_path = tmp_path / "sep.db"
    db = _sample_db(db_path)
    truth = {d: decision_window(db, "005930", d).label for d in decidable_days(db, "005930", "2022-02-14", "2022-05-31")}

    def skilled(day: str) -> bool:
        return hashlib.sha256(f"005930 {day}".encode()).digest()[0] < 0.7 * 256

    with FakeOpenAI(known_skill(truth, skilled)) as server:
        head = (f'stocks = ["005930"]\nstart = "2022-02-14"\nend = "2022-05-31"\ntrials = 1\nconcurrency = 4\n'
                f'[llm]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n')
        (tmp_path / "job.toml").write_text('name = "skill"\n' + head)
        assert run("batch", "run", str(tmp_path / "job.toml"), db=db_path).returncode == 0
        (tmp_path / "exp.toml").write_text(
            'name = "skill-walk"\n' + head.replace('model = "fake-model"', 'model = "other-model"')
            + '[experiment]\ntrain_start = "2022-02-14"\ntrain_end = "2022-04-15"\ntest_start = "2022-04-20"\n'
            'test_end = "2022-05-31"\narms = ["base"]\n')
        done = run("experiment", "run", str(tmp_path / "exp.toml"), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
    headline = json.loads(run("eval", "--job", str(tmp_path / "job.toml"), "--json", db=db_path).stdout)
    days = [d for (d,) in db.execute("SELECT date FROM predictions WHERE model LIKE 'fake-model%' AND trial = 0 "
                                     "AND method = 'reflect' ORDER BY date").fetchall()]
    assert headline["n"] == len(days) == 74
    assert headline["accuracy"] == pytest.approx(sum(map(skilled, days)) / len(days), abs=1e-12)
    base = json.loads(done.stdout)["arms"]["base"]
    test_days = [d for (d,) in db.execute("SELECT date FROM experiment_forecasts WHERE arm = 'base' ORDER BY date")]
    assert base["n"] == len(test_days) > 20
    assert base["accuracy"] == pytest.approx(sum(map(skilled, test_days)) / len(test_days), abs=1e-12)
