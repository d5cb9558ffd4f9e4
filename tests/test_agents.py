"""SEP's loop against a scripted OpenAI-compatible server on 127.0.0.1 (real HTTP), and end to end
on the real default embedded model, Qwen2.5-Coder-1.5B."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from sep.ingest import import_texts
from sep.memory import open_memory
from sep.shapes import quote
from sep.agents import lesson_choices
from sep.llm import Answer

from conftest import run
from fake_openai import FakeOpenAI, cite_all, echo_reason, kind_of

RIGHT = "하락"  # 005930 on 2022-06-01 closed down; the reason repeats the first summary (grounded)
WRONG = "상승"


@pytest.fixture
def sample_db(sample_memory, db_path) -> Path:
    sample_memory.conn.close()
    return db_path


def script(explain, reflect="개별 종목 소식보다 거시 악재를 더 크게 봐야 했다."):
    """Summaries cite every text; explanations are `explain(prompt)`'s label with a grounded reason."""
    def reply(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return cite_all(prompt)
        if kind == "reflect":
            return reflect
        return echo_reason(prompt, explain(prompt))
    return reply


def reflect_json(server: FakeOpenAI, db: Path, date: str = "2022-06-01", *extra: str, env: dict | None = None) -> dict:
    result = run("reflect", "--stock", "005930", "--date", date, "--json", "--base-url", server.base_url, *extra, db=db,
                 env=env)
    assert result.returncode == 0, result.stderr
    days = json.loads(result.stdout)
    assert isinstance(days, list) and len(days) == 1  # one shape: a list of days, one for --date
    return days[0]


def title_of(db_path: Path, text_id: str) -> str:
    """A text's title as an extractive point shows it."""
    from sep.evidence import MAX_TITLE_CHARS
    from sep.guard import clean_for_prompt

    return clean_for_prompt(open_memory(db_path).execute("SELECT title FROM texts WHERE id = ?", [int(text_id)])
                            .fetchone()[0])[:MAX_TITLE_CHARS]


def test_right_answer_is_one_trial_with_confidence(sample_db):
    """The default (derived) path: every item is judged first, then the answer; its confidence is
    the cited items' stance (here every item negative: P(negative) = 1 / (1 + 2e^-2.3), so
    P(down) = 1/2 + 1/2 (P(negative) - P(positive)))."""
    with FakeOpenAI(script(lambda p: RIGHT), stance=lambda text: "negative") as server:
        out = reflect_json(server, sample_db, env={"SEP_SUMMARIZER": "auto"})  # the default
        items = re.findall(r"^\[t(\d+)\] \(-\) (.+)$", next(r for r in server.requests if kind_of(r) == "explain")
                           ["messages"][-1]["content"], flags=re.M)
        judged = server.kinds().count("stance")
    assert out["actual"] == "down" and out["target_day"] == "2022-06-02"
    assert len(out["trials"]) == 1 and out["trials"][0]["correct"] and out["trials"][0]["label"] == "down"
    neg, pos = 1 / (1 + 2 * math.exp(-2.3)), math.exp(-2.3) / (1 + 2 * math.exp(-2.3))
    assert out["trials"][0]["confidence"] == pytest.approx(0.5 + 0.5 * (neg - pos), rel=1e-3)
    assert out["trials"][0]["evidence"][0]["stance"]["negative"] == pytest.approx(neg, abs=1e-4)
    assert out["window_stance"] == pytest.approx(pos - neg, abs=1e-3)
    assert out["final"] == {"label": "down", "correct": True, "trials_used": 1}
    # news days show their top titles as written (SEP_SUMMARIZER=auto): no summary is asked
    assert server.kinds().count("summarize") == 0 and all(title_of(sample_db, t) == p for t, p in items)
    assert items and judged == len({p for _, p in items})  # each item judged once, every one shown with its direction
    db = open_memory(sample_db)
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM summaries").fetchone()[0] == 5
    assert db.execute("SELECT count(*) FROM stances").fetchone()[0] == judged


def test_the_evidence_format_reads_its_confidence_at_the_label(sample_db):
    """`--explain-format evidence` keeps the model's own directions and label; its confidence is the
    label token's probability (-0.2 against -1.8), and no item is judged first."""
    with FakeOpenAI(script(lambda p: RIGHT)) as server:
        out = reflect_json(server, sample_db, "2022-06-01", "--explain-format", "evidence")
        assert "stance" not in server.kinds()
    assert out["trials"][0]["correct"] and out["trials"][0]["label"] == "down"
    assert out["trials"][0]["confidence"] == pytest.approx(1 / (1 + pow(2.718281828, -1.6)), rel=1e-3)


def test_a_lessons_kind_is_read_for_the_item_that_misled(sample_db):
    """The reflection's last line names a kind (here 실적, the list's first, as the default model mostly
    did); the lesson's kind is instead read for the item that misled, its own words. That item (a
    headline about Japan's chip plans) matches no kind's cues, so the model is asked, and the kind is
    read from the kinds' log-probs: 시장 점유율 at -0.3 against 실적 at -1.5 and -9 for the other nine."""
    cited: list[str] = []
    kind_texts: list[str] = []

    def reply(kind: str, prompt: str):
        if kind == "summarize":
            return cite_all(prompt)
        if kind == "reflect":
            return f"오판: [{cited[0]}] 방향\n놓침: 없음\n교훈: 실적"
        if kind == "kind":
            kind_texts.append(prompt)
            return {"시장 점유율": -0.3, "실적": -1.5}
        cited.append(re.search(r"^\[(t\d+)\] ", prompt, flags=re.M)[1])
        return echo_reason(prompt, "상승" if "과거의 반성" not in prompt else "하락")

    with FakeOpenAI(reply, owned_by="vllm") as server:
        out = reflect_json(server, sample_db, "2022-06-01", "--trials", "2")
    misled = next(i for i in out["trials"][0]["evidence"] if i["item"] == cited[0])
    assert kind_texts == [" ".join(misled["point"].split())]  # the misled item's own words, asked once
    assert out["trials"][0]["reflection"].startswith("시장 점유율 소식은 주가에 주는 방향을 거꾸로 읽기 쉬우니")
    detail = json.loads(open_memory(sample_db).execute("SELECT detail FROM reflections").fetchone()[0])
    assert (detail["misled"], detail["why"], detail["kind_said"], detail["kind"]) == (cited[0], "방향", "실적", "시장 점유율")
    assert detail["kind_p"] == pytest.approx(math.exp(-0.3) / (math.exp(-0.3) + math.exp(-1.5) + 9 * math.exp(-9)),
                                             abs=1e-4)


def test_the_same_days_retry_is_told_which_item_misled_and_which_was_overlooked(sample_db):
    """The retry after a miss (hindsight) sees, beside the general lesson, the ids the reflection named:
    the item that misled and why, and the one overlooked. The lesson stored for later days names no id,
    and the first answer, the forecast, is told nothing."""
    explains: list[str] = []

    def reply(kind: str, prompt: str):
        if kind == "summarize":
            return cite_all(prompt)
        if kind == "kind":
            return {"실적": -0.1}
        if kind == "reflect":  # the first shown item misled it (weight), the last was overlooked
            ids = re.findall(r"^\[(t\d+)\] ", explains[0], flags=re.M)
            return f"오판: [{ids[0]}] 비중\n놓침: [{ids[-1]}]\n교훈: 실적"
        explains.append(prompt)
        return echo_reason(prompt, "상승")

    with FakeOpenAI(reply, owned_by="vllm") as server:
        out = reflect_json(server, sample_db, "2022-06-01", "--trials", "2")
    first, retry = explains
    ids = re.findall(r"^\[(t\d+)\] ", first, flags=re.M)
    hint = f"이 날의 지난 답은 [{ids[0]}]를 너무 무겁게 보았다. 그리고 [{ids[-1]}]를 놓쳤다."
    assert hint in retry and "과거의 반성" in retry
    assert "이 날의 지난 답" not in first and "과거의 반성" not in first
    assert out["trials"][0]["reflection"] == "실적 소식은 다음 날 종가를 움직이는 힘이 보기보다 작으니, 같은 며칠의 다른 소식과 견주어 가볍게 본다."
    stored = [r for (r,) in open_memory(sample_db).execute("SELECT reflection FROM reflections").fetchall()]
    assert stored == [out["trials"][0]["reflection"]]  # what later days recall: no id, no hint


def test_a_lesson_blaming_an_item_the_window_never_showed_is_never_recalled(sample_db):
    """UPS 2022-05-09 in jobs/learning.toml: an empty window, where the default model cited the placeholder
    t0 under invented news, and its lesson blamed t0. Nothing the window showed misled it, so the lesson
    is flagged no_evidence: kept, never recalled. A server that ignores the lesson's regex does the same."""
    def reply(kind: str, prompt: str):
        if kind == "summarize":
            return cite_all(prompt)
        if kind == "kind":
            return {"실적": -0.1}
        if kind == "reflect":
            return "오판: [t0] 비중\n놓침: 없음\n교훈: 실적"
        return echo_reason(prompt, "상승")

    with FakeOpenAI(reply, owned_by="vllm") as server:
        reflect_json(server, sample_db, "2022-06-01", "--trials", "2")
    rows = open_memory(sample_db).execute("SELECT flags, detail FROM reflections").fetchall()
    assert [(flags, json.loads(detail)["misled"]) for flags, detail in rows] == [("no_evidence", "t0")]


def test_wrong_answer_reflects_retries_and_makes_a_pair(sample_db, tmp_path):
    def explain(prompt: str) -> str:
        return RIGHT if "과거의 반성" in prompt else WRONG

    with FakeOpenAI(script(explain), owned_by="vllm") as server:
        out = reflect_json(server, sample_db, "2022-06-01", "--trials", "3")
        explain_requests = [r for r in server.requests if kind_of(r) == "explain"]
        reflect_requests = [r for r in server.requests if kind_of(r) == "reflect"]
    assert [t["correct"] for t in out["trials"]] == [False, True]
    assert out["trials"][0]["reflection"] and out["trials"][1]["reflection"] is None
    # vLLM gets the derived shape as one regex: the window's ids, each with its judged direction (the
    # fake judges every item neutral), so the label is the model's own call (a tie), one of two words
    # and each cited line is its item's own words as the prompt showed them (cut at 60 characters)
    regex = explain_requests[0]["structured_outputs"]["regex"]
    shown, words = re.search(r"^\[(t\d+)\] \(0\) (.+)$", explain_requests[0]["messages"][-1]["content"], flags=re.M).groups()
    line = f"[{shown}] 0 {quote(words)}"
    assert re.fullmatch(regex, f"근거:\n{line}\n판단: 하락\n이유: 수주가 늘었다.")
    assert not re.fullmatch(regex, f"근거:\n[{shown}] 0 수주\n판단: 하락\n이유: 수주가 늘었다.")  # not its words
    assert not re.fullmatch(regex, f"근거:\n{line.replace(' 0 ', ' + ', 1)}\n판단: 하락\n이유: 수주가 늘었다.")  # not its direction
    assert not re.fullmatch(regex, f"근거:\n{line}\n판단: 보합\n이유: 수주가 늘었다.")
    assert not re.fullmatch(regex, f"근거:\n{line.replace(shown, 't999999', 1)}\n판단: 하락\n이유: 수주가 늘었다.")  # only the window's ids
    # the lesson's three lines are held the same way: a cited id and why, an overlooked id or none, the lesson
    lesson = reflect_requests[0]["structured_outputs"]["regex"]
    cited = out["trials"][0]["evidence"][0]["item"]
    assert re.fullmatch(lesson, f"오판: [{cited}] 비중\n놓침: 없음\n교훈: 수급")
    assert not re.fullmatch(lesson, "오판: [t999999] 비중\n놓침: 없음\n교훈: 수급")
    assert not re.fullmatch(lesson, f"오판: [{cited}] 비중\n놓침: 없음\n교훈: 하루 치 수급보다 실적 전망을 무겁게 본다.")
    db = open_memory(sample_db)
    assert db.execute("SELECT trial, correct FROM predictions ORDER BY trial").fetchall() == [(0, 0), (1, 1)]
    assert db.execute("SELECT count(*) FROM reflections").fetchone()[0] == 1
    export = tmp_path / "pairs.jsonl"
    assert run("pairs", "export", "--out", str(export), db=sample_db).returncode == 0
    pairs = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == 1
    pair = pairs[0]
    assert set(pair) >= {"prompt", "chosen", "rejected"}
    # TRL's conversational format: the prompt's chat messages, one assistant message each side
    assert [m["role"] for m in pair["prompt"]][-1] == "user" and pair["prompt"][0]["role"] == "system"
    assert [m["role"] for m in pair["chosen"] + pair["rejected"]] == ["assistant", "assistant"]
    chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
    assert "판단: 하락" in chosen and "판단: 상승" in rejected  # chosen = what the market did
    assert all("과거의 반성" not in m["content"] for m in pair["prompt"])  # the prompt without reflections


def test_garbage_is_recorded_as_none_and_never_crashes(sample_db):
    with FakeOpenAI(lambda kind, p: cite_all(p) if kind == "summarize" else "음... 글쎄요, 잘 모르겠습니다.",
                    owned_by="other") as server:
        out = reflect_json(server, sample_db, "2022-06-01", "--trials", "3")
        assert all("structured_outputs" not in r for r in server.requests)  # not vLLM: free text
    assert [t["label"] for t in out["trials"]] == [None, None, None]
    assert not any(t["correct"] for t in out["trials"])
    db = open_memory(sample_db)
    assert db.execute("SELECT count(*) FROM predictions WHERE label IS NULL AND correct = 0").fetchone()[0] == 3


def test_no_future_text_reaches_any_prompt(sample_memory, db_path, tmp_path):
    future = tmp_path / "future.jsonl"
    future.write_text(
        '{"stock": "005930", "date": "2022-06-02", "title": "FUTURE-MARKER 6월 2일 기사"}\n'
        '{"stock": "005930", "published_at": "2022-06-01T10:00:00+09:00", "title": "DAY-D 6월 1일 오전 기사"}\n'
        '{"stock": "005930", "published_at": "2022-06-01T23:59:00+09:00", "title": "LATE-D 6월 1일 밤 기사"}\n'
        '{"stock": "005930", "published_at": "2022-06-01T15:30:00Z", "title": "UTC-FUTURE 6월 2일 0시 30분 KST"}\n',
        encoding="utf-8")
    import_texts(sample_memory, [future])
    sample_memory.conn.close()
    with FakeOpenAI(script(lambda p: WRONG)) as server:
        reflect_json(server, db_path, "2022-06-01", "--trials", "3")
        sent = "\n".join(r["messages"][-1]["content"] for r in server.requests)
    assert "DAY-D" in sent  # texts of D itself are in, up to the close (15:30 KST)
    assert "LATE-D" not in sent  # after the close it counts for the next day
    assert "FUTURE-MARKER" not in sent and "UTC-FUTURE" not in sent
    dry = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--dry-run", db=db_path)
    assert dry.returncode == 0, dry.stderr
    assert "DAY-D" in dry.stdout and "LATE-D" not in dry.stdout
    assert "FUTURE-MARKER" not in dry.stdout and "UTC-FUTURE" not in dry.stdout
    assert "summarize prompt" in dry.stdout and "explain prompt" in dry.stdout
    assert "삼성전자(005930)" in dry.stdout  # the sample's stock list names the stock


def test_reflections_are_recalled_only_once_their_outcome_is_known(sample_db):
    def explain(prompt: str) -> str:
        return WRONG

    with FakeOpenAI(script(explain, reflect="LESSON-MAYEND 개별 종목 소식보다 거시 변수를 먼저 보라"), owned_by="other") as server:
        reflect_json(server, sample_db, "2022-05-31", "--trials", "2")  # target 06-02; 05-31 → 06-02 fell
        server.requests.clear()
        reflect_json(server, sample_db, "2022-06-01", "--trials", "1")  # holiday: 06-02 not yet known
        assert not any("LESSON-MAYEND" in r["messages"][-1]["content"] for r in server.requests)
        assert server.kinds().count("summarize") == 1  # only 06-01 is new; 05-28..05-31 are cached
        server.requests.clear()
        reflect_json(server, sample_db, "2022-06-02", "--trials", "1")
        assert any("LESSON-MAYEND" in r["messages"][-1]["content"] for r in server.requests)


def test_summaries_are_cached_across_runs_and_ranges(sample_db):
    with FakeOpenAI(script(lambda p: RIGHT)) as server:
        reflect_json(server, sample_db, "2022-05-31")
        first = server.kinds().count("summarize")
        server.requests.clear()
        result = run("reflect", "--stock", "005930", "--start", "2022-05-30", "--end", "2022-06-01", "--json",
                     "--base-url", server.base_url, db=sample_db)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
    assert [o["date"] for o in out] == ["2022-05-30", "2022-05-31"]  # trading days only
    # 05-31 read 05-27..05-31; the range adds only 05-26 (05-30's window). Nothing is summarized twice.
    assert first == 5 and server.kinds().count("summarize") == 1


def test_server_down_is_a_clear_error(sample_db):
    result = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--base-url", "http://127.0.0.1:9/v1",
                 db=sample_db)
    assert result.returncode == 1 and "No OpenAI-compatible server answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_reflect_input_exits_2(sample_db):
    result = run("reflect", "--stock", "005930", "--date", "2023-01-01", "--dry-run", db=sample_db)
    assert result.returncode == 2 and "outside the price data" in result.stderr


@pytest.mark.slow
def test_default_model_writes_cited_uncopied_korean(sample_db):
    """Qwen2.5-Coder-1.5B, the default, end to end on the demo day (a 2-day window to keep it short)."""
    import re

    from sep.agents import load_prompt
    from sep.quality import copied

    result = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--trials", "2", "--json", "--model",
                 "qwen2.5-coder-1.5b", db=sample_db, env={"SEP_WINDOW_DAYS": "2"}, timeout=900)
    assert result.returncode == 0, result.stderr
    (out,) = json.loads(result.stdout)
    db = open_memory(sample_db)
    window_ids = {i for (i,) in db.execute("SELECT id FROM texts WHERE stock = '005930' AND date IN "
                                            "('2022-05-31', '2022-06-01')")}
    assert [s["date"] for s in out["summaries"]] == ["2022-05-31", "2022-06-01"]
    for s in out["summaries"]:
        points = s["summary"].splitlines()
        assert 1 <= len(points) <= 5
        for point in points:  # every point cites a real text of its window
            cited = {int(i) for i in re.findall(r"t(\d+)", point.rsplit("[", 1)[-1])}
            assert cited and cited <= window_ids, point
    instructions = {n: load_prompt("ko", n).instructions(max_points=5) for n in ("summarize", "explain", "reflect")}
    model_summaries = [r[0] for r in db.execute("SELECT attempt FROM summaries WHERE attempt IS NOT NULL")] + \
        [s["summary"] for s in out["summaries"] if s["method"] == "model"]
    assert not any(copied(s, instructions["summarize"]) for s in model_summaries)
    trial = out["trials"][0]
    assert trial["label"] in ("up", "down") and re.search(r"[가-힣]{2,}", trial["explanation"])
    assert not copied(trial["explanation"], instructions["explain"]), trial["explanation"]
    assert out["actual"] == "down" and 1 <= len(out["trials"]) <= 2
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == len(out["trials"])
    for t in out["trials"]:
        assert t["label"] in ("up", "down") and 0.0 <= t["confidence"] <= 1.0  # the grammar forces a label
        assert t["correct"] == (t["label"] == "down" and not t["flags"])
        assert "copied" not in t["flags"] and "invented_dates" not in t["flags"], t
        if t["reflection"]:
            assert not copied(t["reflection"], instructions["reflect"]), t["reflection"]


def test_dry_run_prints_untrusted_titles_verbatim(sample_memory, db_path, tmp_path):
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text('{"stock": "005930", "date": "2022-06-01", "title": "닫는 태그 [/] 와 [bold red]강조[/bold red]"}\n',
                       encoding="utf-8")
    import_texts(sample_memory, [hostile])
    sample_memory.conn.close()
    dry = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--dry-run", db=db_path)
    assert dry.returncode == 0, dry.stderr
    assert "닫는 태그 [/] 와 [bold red]강조[/bold red]" in dry.stdout


def test_a_prompts_folder_replaces_only_the_files_it_holds(sample_memory, db_path, tmp_path):
    """`--prompts DIR` with just ko/explain_derived.toml: the explain prompt is the user's, the summarize
    prompt stays packaged; a folder that doesn't exist is one sentence and exit 2."""
    from sep.agents import PROMPTS_DIR

    sample_memory.conn.close()
    mine = tmp_path / "prompts" / "ko"
    mine.mkdir(parents=True)
    packaged = (PROMPTS_DIR / "ko" / "explain_derived.toml").read_text(encoding="utf-8")
    mine.joinpath("explain_derived.toml").write_text(packaged.replace('system = """', 'system = """[내 프롬프트] ', 1),
                                                     encoding="utf-8")
    assert "[내 프롬프트]" in mine.joinpath("explain_derived.toml").read_text(encoding="utf-8")
    dry = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--dry-run", "--prompts", str(tmp_path / "prompts"),
              db=db_path)
    assert dry.returncode == 0, dry.stderr
    explain = dry.stdout.split("── explain prompt ──")[1]
    summarize = dry.stdout.split("── summarize prompt ──")[1].split("──")[0]
    assert "[내 프롬프트]" in explain and "[내 프롬프트]" not in summarize and summarize.strip()
    missing = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--dry-run", "--prompts", str(tmp_path / "nope"),
                  db=db_path)
    assert missing.returncode == 2 and "The prompts folder" in missing.stderr and missing.stderr.count("\n") == 1


def test_an_english_stock_is_shown_in_english(db_path, fixtures):
    """SEP's English setup (sn2 tweets, Yahoo prices): the prompts, the CLI and the JSON say
    Positive/Negative and Summary, never 상승/하락 or 요약."""
    db = open_memory(db_path)
    sep_import = __import__("sep")
    sep_import.import_prices(db, [fixtures / "ABBV.csv"])
    sep_import.import_texts(db, [fixtures / "tweets" / "ABBV"])
    db.conn.close()

    def reply(kind: str, prompt: str) -> str:
        return cite_all(prompt) if kind == "summarize" else \
            "Next time weigh the sector news first." if kind == "reflect" else echo_reason(prompt, "Positive")

    with FakeOpenAI(reply) as server:
        shown = run("reflect", "--stock", "ABBV", "--date", "2020-01-07", "--trials", "2", "--base-url", server.base_url,
                    db=db_path)
        as_json = run("reflect", "--stock", "ABBV", "--date", "2020-01-07", "--trials", "1", "--json",
                      "--base-url", server.base_url, db=db_path)
        explain = [r for r in server.requests if kind_of(r) == "explain"][0]
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "Summary 2020-01-06" in text and "trial 0 (forecast): Positive" in text
    assert not re.search(r"[가-힣]", shown.stdout), shown.stdout  # not one Korean word in the interface
    assert "Decision:" in explain["messages"][0]["content"]  # the English evidence-first prompt
    (day,) = json.loads(as_json.stdout)
    assert day["trials"][0]["label_word"] == "Positive" and day["actual_word"] in ("Positive", "Negative")
    assert day["trials"][0]["evidence"] and day["trials"][0]["evidence"][0]["direction"] == "+"


def test_the_packaged_markers_are_the_ones_stored_answers_are_read_with():
    """Training reads stored answers without their prompt: the markers it falls back on are the prompts'."""
    from sep.agents import load_prompt
    from sep.llm import parse_answer
    from sep.window import LABEL_MARKERS

    for lang, marker in LABEL_MARKERS.items():
        prompt = load_prompt(lang, "explain")
        assert prompt.label_after == marker and prompt.evidence_head
        word = "하락" if lang == "ko" else "Negative"
        assert parse_answer(f"{prompt.evidence_head}\n[t1] - x\n{marker} {word}\ny").label == "down"


def test_a_lesson_names_an_item_that_argued_for_the_wrong_label_and_one_that_pointed_to_the_outcome():
    """A derived label follows its + and - lines, so only those that argued for the wrong label can
    have misled it; what was overlooked is an uncited item pointing to the outcome, when there is one."""
    items = [{"item": i, "sign": s} for i, s in [("t1", "+"), ("t2", "0"), ("t3", "-"), ("t4", "-"), ("t5", "+"),
                                                   ("t6", "0")]]
    up = Answer("up", "", None, "", evidence=[{"item": "t1", "direction": "+"}, {"item": "t2", "direction": "0"},
                                                {"item": "t3", "direction": "-"}])
    assert lesson_choices(up, items, "down") == (("t1",), ("t1", "t4"))  # t3 was cited: not overlooked
    down = Answer("down", "", None, "", evidence=[{"item": "t3", "direction": "-"}, {"item": "t2", "direction": "0"}])
    assert lesson_choices(down, items, "up") == (("t3",), ("t3", "t1", "t5"))
    # nothing cited argued for the label (a tie of "0" lines, the model's call): any cited item; and
    # nothing uncited points to the outcome: any uncited item
    tie = Answer("up", "", None, "", evidence=[{"item": "t2", "direction": "0"}, {"item": "t6", "direction": "0"}])
    assert lesson_choices(tie, [i for i in items if i["sign"] != "-"], "down") == (("t2", "t6"), ("t2", "t6", "t1", "t5"))


def test_auto_shows_headlines_and_tweets_as_written_and_summarizes_board_posts(sample_memory, mock_llm):
    """SEP_SUMMARIZER=auto (the default): a day of news or report headlines, or of tweets, is its top
    texts as written, no model call; the same day's texts as board posts are summarized by the model."""
    from dataclasses import replace

    from sep.agents import Agents, day_texts
    from sep.evidence import extractive_points
    from sep.settings import Settings
    from sep.window import decision_window

    window = decision_window(sample_memory, "005930", "2022-06-01", 5)
    day, texts = next(iter(window.texts_by_day().items()))
    agents = Agents.for_stock(sample_memory, mock_llm, "005930", Settings(summarizer="auto"))
    assert Settings.model_fields["summarizer"].default == "auto"  # the default (the suite asks for "model")
    headlines = agents.summarize_day("005930", day, texts)
    assert not mock_llm.chat.calls and agents.summary_info[("005930", day)][0] == "extractive"
    assert headlines == "\n".join(extractive_points(day_texts(texts), 5))
    tweets = agents.summarize_day("005930", day, [replace(t, source="tweet") for t in texts])
    assert not mock_llm.chat.calls and tweets == headlines
    agents.summarize_day("005930", day, [replace(t, source="naver-board") for t in texts])
    assert [c["agent"] for c in mock_llm.chat.calls] == ["summarize"]


def test_reflect_says_once_that_the_days_show_their_titles(sample_db):
    with FakeOpenAI(script(lambda p: RIGHT), stance=lambda text: "negative") as server:
        out = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--base-url", server.base_url, db=sample_db,
                  env={"SEP_SUMMARIZER": "auto"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("shows its top texts as written (no model)") == 1 and "every day" in out.stdout
