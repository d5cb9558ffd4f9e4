"""Experiments measured against servers whose skill we set: a memorizer that is right with
probability p per (stock, day) when it can see which day it is, and says 상승/Positive when the
company and dates are masked; a coin; a server that never gives a usable answer. Every figure the
experiment prints must be the one the server's hash made, end to end through real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from sep.decide import decidable_days
from sep.evaluate import accuracy, bootstrap_ci, min_detectable_gap
from sep.ingest import import_prices, import_texts
from sep.memory import open_memory
from sep.sample import sample_files
from sep.window import decision_window

from conftest import run
from fake_openai import FakeOpenAI, echo_reason
from test_eval_audit import screenshot

FIXTURES = Path(__file__).parent / "fixtures"
DAY = {"ko": re.compile(r"(\d{4}-\d{2}-\d{2}) 장 마감 기준"), "en": re.compile(r"At the close of (\d{4}-\d{2}-\d{2})")}
WORDS = {"ko": ("상승", "하락"), "en": ("Positive", "Negative")}


def right_by_hash(stock: str, day: str, p: float) -> bool:
    return hashlib.sha256(f"{stock} {day}".encode()).digest()[0] < p * 256


@pytest.fixture(scope="module")
def memory(tmp_path_factory) -> tuple[Path, dict]:
    """The bundled sample (005930, Korean) and the ABBV excerpt (English), with every day's truth."""
    path = tmp_path_factory.mktemp("exp") / "sep.db"
    db = open_memory(path)
    prices, texts = sample_files()
    import_prices(db, prices)
    import_texts(db, texts)
    import_prices(db, [FIXTURES / "ABBV.csv"])
    import_texts(db, [FIXTURES / "tweets" / "ABBV"])
    truth = {(s, d): decision_window(db, s, d).label
             for s, lo, hi in (("005930", "2022-02-14", "2022-05-31"), ("ABBV", "2020-01-02", "2020-01-16"))
             for d in decidable_days(db, s, lo, hi)}
    db.conn.close()
    return path, truth


def memorizer(truth: dict, p: float):
    """Right with probability p per (stock, day) when the prompt shows the day, in the prompt's
    language; with the day masked it cannot tell which day it is and always says up."""
    def script(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return cite_first(prompt)
        up, down = WORDS["en" if "Positive or Negative" in prompt else "ko"]
        found = next((m for m in (DAY["ko"].search(prompt), DAY["en"].search(prompt)) if m), None)
        if not found:
            return echo_reason(prompt, up)
        stock = "ABBV" if "Positive or Negative" in prompt else "005930"
        day = found[1]
        label = truth[(stock, day)] if right_by_hash(stock, day, p) else \
            {"up": "down", "down": "up"}[truth[(stock, day)]]
        return echo_reason(prompt, up if label == "up" else down)
    return script


def cite_first(prompt: str) -> str:
    """A summary point quoting the first text of the day, cited as the prompt numbers it."""
    found = re.search(r"^\[(\d+)\] (.+)$", prompt, flags=re.M)
    return f"- {found[2][:60]} [{found[1]}]" if found else "- 관련 사실 없음"


def job(tmp: Path, name: str, base_url: str, model: str, stocks: str, train: tuple[str, str], test: tuple[str, str],
        extra: str = "", llm: str = "") -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'name = "{name}"\nstocks = {stocks}\nstart = "{train[0]}"\nend = "{test[1]}"\ntrials = 1\n'
                    f'concurrency = 4\n[llm]\nbase_url = "{base_url}"\nmodel = "{model}"\n{llm}'
                    f'[experiment]\ntrain_start = "{train[0]}"\ntrain_end = "{train[1]}"\ntest_start = "{test[0]}"\n'
                    f'test_end = "{test[1]}"\n{extra}')
    return path


@pytest.fixture(scope="module")
def known(memory, tmp_path_factory):
    """One experiment of a p = 0.7 memorizer over 005930: base, memory and masked arms, three
    folds, a knowledge cutoff inside the test range."""
    db_path, truth = memory
    tmp = tmp_path_factory.mktemp("known")
    with FakeOpenAI(memorizer(truth, 0.7)) as server:
        path = job(tmp, "known", server.base_url, "memorizer", '["005930"]', ("2022-02-14", "2022-03-15"),
                   ("2022-03-18", "2022-05-31"), 'arms = ["base", "memory", "masked"]\nfolds = 3\n',
                   'cutoff = "2022-04-29"\n')
        done = run("experiment", "run", str(path), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
        requests = list(server.requests)
    return json.loads(done.stdout), requests, db_path, truth, path


def test_a_memorizer_of_known_skill_is_measured_exactly_and_masking_takes_its_edge(known):
    r, requests, db_path, truth, _ = known
    db = open_memory(db_path)
    stored = {arm: dict(((s, d), label) for s, d, label in db.execute(
        "SELECT stock, date, label FROM experiment_forecasts WHERE experiment = ? AND arm = ? ORDER BY date",
        [r["id"], arm]).fetchall()) for arm in ("base", "memory", "masked")}
    days = sorted(stored["base"])
    assert len(days) == r["arms"]["base"]["n"] > 40
    skilled = [right_by_hash(s, d, 0.7) for s, d in days]
    ups = [truth[x] == "up" for x in days]
    base, memory_arm, masked = (r["arms"][a] for a in ("base", "memory", "masked"))
    assert base["accuracy"] == pytest.approx(sum(skilled) / len(days), abs=1e-12)
    assert base["coverage"] == 1.0 and base["accuracy_answered"] == base["accuracy"]
    # the server ignores lessons: the memory arm answers every day as base does
    assert stored["memory"] == stored["base"] and memory_arm["accuracy"] == base["accuracy"]
    # masked: the day can't be told, so it says up every day; its accuracy is the share of up days
    assert set(stored["masked"].values()) == {"up"}
    assert masked["accuracy"] == pytest.approx(sum(ups) / len(days), abs=1e-12)
    m = r["memorization"]
    assert m["n"] == len(days) and m["gap"] == pytest.approx(base["accuracy"] - masked["accuracy"], abs=1e-12)
    assert m["gap_ci95"][0] < m["gap"] < m["gap_ci95"][1]
    # every prompt the masked arm sent hid the company, its code and every date, and so did the regex
    # that holds its answer (a cited line is its item's words as the masked prompt showed them)
    masked_prompts = [json.dumps(b["messages"], ensure_ascii=False)
                      + re.sub(r"\\(.)", r"\1", (b.get("structured_outputs") or {}).get("regex", "")) for b in requests
                      if "기준일 장 마감 기준" in json.dumps(b["messages"], ensure_ascii=False)
                      or "당일 해당사 관련 글" in json.dumps(b["messages"], ensure_ascii=False)]
    assert any(re.search(r"\[t\d+\] [+0-] \S", text.split("}]", 1)[-1]) for text in masked_prompts)  # quoted lines sent
    assert len(masked_prompts) > len(days)  # its own summaries too
    for text in masked_prompts:
        assert not re.search(r"20\d\d-\d\d-\d\d|삼성전자|005930", text), text[:300]
    # the cutoff splits the days by their target day
    pre = [x for x, ok in zip(days, skilled) if decision_window(db, *x).target_day <= "2022-04-29"]
    assert r["cutoff"] == {"date": "2022-04-29", "source": "set (--cutoff, [llm] cutoff or SEP_CUTOFF)"}
    assert base["pre_cutoff"]["n"] == len(pre) and base["post_cutoff"]["n"] == len(days) - len(pre) > 5
    assert base["post_cutoff"]["accuracy"] == pytest.approx(
        sum(right_by_hash(*x, 0.7) for x in days if x not in pre) / (len(days) - len(pre)), abs=1e-12)
    # three folds, each trained through its own end, pooled = the whole
    folds = r["folds"]
    assert len(folds) == 3 and sum(f["days"] for f in folds) == len(days)
    assert all(a["train_end"] < b["start"] for a, b in zip(folds, folds[1:]))
    for f in folds:
        inside = [x for x in days if f["start"] <= x[1] <= f["end"]]
        assert f["arms"]["base"]["accuracy"] == pytest.approx(
            sum(right_by_hash(*x, 0.7) for x in inside) / len(inside), abs=1e-12)
    assert base["min_detectable_accuracy"] > 0.6 and base["by_stock"]["005930"]["n"] == len(days)
    # the market reward PPO and GRPO maximise, held out: +|r| on the days the hash made it right, -|r| on
    # the rest; the masked arm, always up, earns the mean return itself
    moves = [decision_window(db, *x).ret for x in days]
    assert base["market_reward"] == pytest.approx(
        sum(abs(r) if ok else -abs(r) for r, ok in zip(moves, skilled)) / len(days), abs=1e-12)
    assert masked["market_reward"] == pytest.approx(sum(moves) / len(days), abs=1e-12)
    low, high = base["market_reward_ci95"]
    assert low < base["market_reward"] < high
    # masked against base on the same days: the gap, how often they differ, and what that many days can show
    v, differ = masked["vs_base"], sum(s != u for s, u in zip(skilled, ups)) / len(days)
    assert v["n"] == len(days) and v["gap"] == pytest.approx(masked["accuracy"] - base["accuracy"], abs=1e-12)
    assert v["discordant"] == pytest.approx(differ, abs=1e-12)
    assert v["min_detectable_gap"] == min_detectable_gap(len(days), differ) and 0 < v["min_detectable_gap"] < differ


def test_a_coin_server_matches_its_realized_count_and_its_bootstrap(memory, tmp_path):
    db_path, truth = memory
    with FakeOpenAI(memorizer(truth, 0.5)) as server:
        path = job(tmp_path, "coin", server.base_url, "coin", '["005930"]', ("2022-02-14", "2022-03-15"),
                   ("2022-03-18", "2022-05-31"), 'arms = ["base"]\n')
        done = run("experiment", "run", str(path), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
    base = json.loads(done.stdout)["arms"]["base"]
    db = open_memory(db_path)
    rows = db.execute("SELECT f.date, f.actual, f.label FROM experiment_forecasts f JOIN experiments e "
                      "ON e.id = f.experiment WHERE e.name = 'coin' ORDER BY f.date").fetchall()
    hits = [tuple(r) for r in rows]
    assert base["accuracy"] == pytest.approx(sum(right_by_hash("005930", d, 0.5) for d, _, _ in hits) / len(hits))
    assert base["accuracy_ci95"] == bootstrap_ci(hits, accuracy)  # what the bootstrap says, not forced around 0.5
    r = json.loads(done.stdout)
    assert r["cutoff"]["date"] is None and "pre_cutoff" not in base  # a served model's cutoff is unknown unless set


def test_the_english_stock_is_answered_and_measured_in_english(memory, tmp_path):
    db_path, truth = memory
    with FakeOpenAI(memorizer(truth, 0.7)) as server:
        path = job(tmp_path, "abbv", server.base_url, "memorizer-en", '["ABBV"]', ("2020-01-02", "2020-01-06"),
                   ("2020-01-08", "2020-01-16"), 'arms = ["base", "masked"]\n', 'cutoff = "2024-01-31"\n')
        done = run("experiment", "run", str(path), "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
        masked = [json.dumps(b["messages"]) for b in server.requests if "decision day" in json.dumps(b["messages"])]
    r = json.loads(done.stdout)
    rows = open_memory(db_path).execute("SELECT date, label FROM experiment_forecasts WHERE experiment = ? AND "
                                        "arm = 'base' ORDER BY date", [r["id"]]).fetchall()
    # the excerpt has tweets on 01-04..01-07 only: a window without any has no item to cite, so no answer
    answered = [d for d, label in rows if label]
    assert answered == ["2020-01-08", "2020-01-09", "2020-01-10"] and len(rows) == 7
    base = r["arms"]["base"]
    assert base["coverage"] == pytest.approx(3 / 7) and base["answered"] == 3
    right = sum(right_by_hash("ABBV", d, 0.7) for d in answered)
    assert base["accuracy_answered"] == pytest.approx(right / 3) and base["accuracy"] == pytest.approx(right / 7)
    assert masked and not any(re.search(r"ABBV|AbbVie|2020|Jan", m) for m in masked)
    assert r["arms"]["base"]["post_cutoff"]["n"] == 0  # 2020 is before the cutoff


def test_an_arm_with_no_usable_answer_has_coverage_zero_and_no_mcc(memory, tmp_path):
    db_path, truth = memory
    with FakeOpenAI(lambda kind, prompt: cite_first(prompt) if kind == "summarize" else "모르겠습니다.") as server:
        path = job(tmp_path, "silent", server.base_url, "silent", '["005930"]', ("2022-05-02", "2022-05-16"),
                   ("2022-05-19", "2022-05-31"), 'arms = ["base"]\n')
        done = run("experiment", "run", str(path), "--json", db=db_path)
        shown = run("experiment", "run", str(path), db=db_path)
    base = json.loads(done.stdout)["arms"]["base"]
    assert base["n"] == 9 and base["coverage"] == 0 and base["answered"] == 0 and base["accuracy"] == 0
    assert base["mcc"] is None and base["mcc_ci95"] is None and base["p_vs_coin"] is None
    assert "no answers" in shown.stdout


def test_the_table_says_why_an_arm_was_skipped_and_what_a_trained_arm_learned_from(known, capsys):
    """A skipped arm is a row saying why, not a crash of the table (a short training range has too few
    pairs for a reward model); a ppo arm that learned from the market alone says so under the table."""
    from sep.cli.experiment import render_experiment

    r = json.loads(json.dumps(known[0]))
    r["arms"]["best_of_n"] = {"n": 0, "skipped": "too few pairs"}
    r["arms"]["ppo"] = {**r["arms"]["base"], "trained_on": "the market reward alone (no reward run: too few pairs)"}
    render_experiment(r)
    out = capsys.readouterr().out
    said = " ".join(out.split())
    assert "best_of_n skipped: too few pairs" in said
    assert "ppo learned from the market reward alone (no reward run: too few pairs)" in said
    low, high = r["arms"]["base"]["market_reward_ci95"]  # the held-out market reward and its interval, whole
    v = r["arms"]["masked"]["vs_base"]
    assert f"masked − base on {v['n']} days: accuracy {v['gap']:+.3f}" in said
    assert f"these days detect a gap of {v['min_detectable_gap']:.3f} or more (power 0.8)" in said
    assert f"│ base │ {r['arms']['base']['market_reward']:+.2%} │ {100 * low:+.2f}…{high:+.2%} │" in said


def test_the_report_draws_every_plot_and_renders_in_chromium(known, tmp_path):
    r, _, db_path, _, path = known
    listed = run("experiment", "list", "--json", db=db_path)
    assert any(x["id"] == r["id"] and x["status"] == "done" for x in json.loads(listed.stdout))
    out = tmp_path / "report.html"
    done = run("experiment", "report", str(r["id"]), "--out", str(out), db=db_path)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    for figure in ("forest", "equity", "reliability", "coverage-accuracy"):
        block = page.split(f'<figure id="{figure}">')[1].split("</figure>")[0]
        assert "<svg" in block and "<path" in block, figure
    assert "<script" not in page and not re.search(r'(src|href)="https?:', page)  # nothing to fetch: works offline
    assert "masked" in page and "Memorization" in page and "2022-04-29" in page
    assert f"<td>{r['arms']['base']['market_reward']:+.2%}</td>" in page  # the market reward per day, in percent
    assert f"masked − base on {r['arms']['masked']['vs_base']['n']} days" in page
    assert json.loads(out.with_suffix(".json").read_text())["arms"]["masked"]["n"] == r["arms"]["masked"]["n"]
    png = screenshot(out, tmp_path)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    ev = tmp_path / "eval.html"
    done = run("eval", "--stock", "005930", "--start", "2022-02-14", "--end", "2022-03-15", "--answered-by",
               "memorizer", "--html", str(ev), db=db_path)
    assert done.returncode == 0, done.stderr
    assert ev.read_text().count("<svg") >= 4 and len(screenshot(ev, tmp_path)) > 30_000


@pytest.mark.parametrize("change, message", [
    (("folds = 3", "folds = 80"), "use at most"),
    (("folds = 3", "folds = 3\nembargo = 9"), "embargo = 9 needs"),
    (('cutoff = "2022-04-29"', 'cutoff = "2022-13-01"'), "not a date"),
    (('"masked"]', '"unmasked"]'), "unknown arm unmasked"),
])
def test_bad_experiments_are_refused_in_one_sentence_and_write_nothing(known, tmp_path, change, message):
    _, _, db_path, _, path = known
    db = open_memory(db_path)
    before = db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
    bad = tmp_path / "bad.toml"
    assert change[0] in path.read_text()
    bad.write_text(path.read_text().replace(*change))
    done = run("experiment", "run", str(bad), db=db_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3
    assert db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == before
    wrong = run("experiment", "run", str(path), "--cutoff", "soon", db=db_path)
    assert wrong.returncode == 2 and "cutoff" in wrong.stderr


def test_masking_hides_the_company_and_dates_in_every_real_title(memory):
    """Every title of the bundled sample, and the ABBV tweets, masked: no name, group name,
    code, ticker or date is left, and a particle written for the name reads right after 해당사."""
    from sep.mask import Masker

    db = open_memory(memory[0])
    ko = Masker.for_company("ko", "005930", "삼성전자").for_window(["2022-05-24", "2022-05-26"], "2022-05-26")
    titles = [t for (t,) in db.execute("SELECT title FROM texts WHERE stock = '005930'")]
    assert len(titles) > 1000
    for title in titles:
        masked = ko.text(title)
        assert not re.search(r"(?<![가-힣A-Za-z0-9])삼성|005930|20\d\d[-.]\d\d?[-.]\d\d?|\d+월 ?\d+일", masked), (title, masked)
    assert ko.text("[2022-05-24] 삼성은 5월 26일 발표") == "[날짜 가] 해당사는 [날짜] 발표"
    en = Masker.for_company("en", "ABBV", "AbbVie Inc.")
    for (tweet,) in db.execute("SELECT title FROM texts WHERE stock = 'ABBV'"):
        assert not re.search(r"ABBV|AbbVie|Jan|2020", en.text(tweet), flags=re.I), tweet
