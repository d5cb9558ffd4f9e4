"""The quality gate (sep.quality) on outputs the embedded models really wrote, and what the agents
do with a flagged text: a flagged summary falls back to the extractive one, a flagged explanation
is unparsable, a flagged reflection is never recalled."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sep.agents import Agents, load_prompt
from sep.evidence import cited_points, extractive_points
from sep.memory import open_memory
from sep.quality import Check, concluded, copied, degenerate, grounded, invented_dates
from sep.window import decision_window

from conftest import run
from fake_openai import FakeOpenAI, cite_all, echo_reason

# The prompts as they were before chat prompts (commit 6f68ac3), whose inline example Gemma-270M copied.
OLD_EXPLAIN = """당신은 한국 주식 애널리스트입니다. {stock}({name})에 대해 {start}부터 {date}까지 나온 정보의 요약이 아래에 있습니다.
{date} 장 마감 기준으로, 다음 거래일 종가가 직전 종가보다 오를지(상승) 내릴지(하락) 판단하세요.
첫 줄에는 "상승" 또는 "하락" 한 단어만 쓰고, 둘째 줄부터 근거를 2~4문장으로 설명하세요.

예시
정보:
[2022-07-07] - 2분기 영업이익 14조원으로 시장 전망치를 웃돌았다. - 외국인이 3거래일 연속 순매수했다.
답:
상승
실적이 시장 예상을 웃돌았고 외국인 매수세가 이어지고 있어 단기 투자심리가 개선될 가능성이 높다."""
OLD_SUMMARIZE = """당신은 증권 애널리스트입니다. 아래는 {date} 하루 동안 {stock}({name})에 대해 나온 글(뉴스 제목, 리포트, 종목토론방 게시글)입니다.
주가에 영향을 줄 수 있는 사실만 골라 짧은 항목으로 요약하세요. 의견, 욕설, 정치 이야기, 광고, 중복은 버리세요."""

# What Gemma-270M wrote on the demo day (issue 11), and what Qwen-1.5B wrote on it with the chat prompts.
GEMMA_EXPLANATION = "실적이 시장 예상을 웃돌았고 외국인 매수세가 이어지고 있어 단기 투자심리가 개선될 가능성이 높다."
GEMMA_SUMMARY = "아래는 2019년 5월 4일 하루 동안 0678(0678)에 대해 나온 글(뉴스 제목, 리포트, 종목토론방 게시글)입니다."
QWEN_EXPLANATION = ("삼성전자의 세계 스마트폰 점유율이 2017년 이후 '최고'라는 점유율을 기대하고 있습니다. 또한 삼성전자의 "
                    "인수합병 진행 중이라는 정보가 들어와서, 삼성전자의 성장은 확장됩니다.")
# What Qwen-1.5B wrote on the demo day (2026-12-05): one sentence said twice, "또한" making it look like two.
QWEN_SAID_TWICE = ("세계 스마트폰 점유율이 가장 높은 기술 기업 중 하나로, 삼성전자는 이 기술을 개발하고 있습니다. 또한, "
                   "삼성전자는 세계 스마트폰 점유율이 가장 높은 기술 기업 중 하나로, 삼성전자는 이 기술을 개발하고 있습니다.")
LOOPING = "- 삼성전자 주가 전망\n- 삼성전자 주가 전망\n- 삼성전자 주가 전망\n- 삼성전자 주가 전망"


@pytest.fixture
def demo_window(sample_memory):
    return decision_window(sample_memory, "005930", "2022-06-01", 5)


def titles_of(window) -> str:
    """What an explanation of this window reads: each day's extractive points."""
    from sep.agents import day_texts

    return "\n".join(p for texts in window.texts_by_day().values() for p in extractive_points(day_texts(texts), 5))


def test_todays_copied_outputs_are_caught(demo_window):
    inputs = titles_of(demo_window)
    explain = Check(OLD_EXPLAIN, inputs, demo_window.window_start, demo_window.date)
    assert {"copied", "ungrounded"} <= set(explain.flags(GEMMA_EXPLANATION))  # no earnings or 외국인 news that week
    pharma = "신약 임상 결과가 긍정적이어서 바이오 업종 전반이 강세를 보일 것이다."  # about another company
    assert explain.flags(pharma) == ["ungrounded"]
    summary = Check(OLD_SUMMARIZE, inputs, demo_window.window_start, demo_window.date)
    assert {"copied", "invented_dates"} <= set(summary.flags(GEMMA_SUMMARY))
    assert invented_dates(GEMMA_SUMMARY, "2022-05-28", "2022-06-01") == ["2019-05-04"]


def test_loops_and_garbage_are_degenerate():
    assert degenerate(LOOPING)
    assert degenerate("}}{{ <<<")
    assert degenerate("")
    assert degenerate("상승 상승 상승 상승 상승 상승 상승 상승 상승 상승 상승 상승 상승")
    assert degenerate(QWEN_SAID_TWICE)
    assert not degenerate(QWEN_EXPLANATION)
    assert not degenerate(QWEN_SAID_TWICE.split(". ")[0])  # the sentence once is weak, not degenerate


def test_a_grounded_answer_passes(demo_window):
    prompt = load_prompt("ko", "explain")
    check = Check(prompt.instructions(), titles_of(demo_window), demo_window.window_start, demo_window.date)
    assert check.flags(QWEN_EXPLANATION) == []  # "2017년" alone is a year, not a date
    assert grounded("외국인이 순매도했다", "외국인 순매도 지속") and not grounded("외국인이 순매도했다", "반도체 업황")
    assert not grounded("주가가 상승할 가능성이 높다", "삼성전자 주가 전망")  # generic market words prove nothing


def test_copy_needs_eight_words_in_a_row():
    source = "가 나 다 라 마 바 사 아 자 차"
    assert copied("x 가 나 다 라 마 바 사 아 y", source)
    assert not copied("x 가 나 다 라 마 바 사 y", source)


def test_points_cite_real_texts_and_unsupported_points_are_dropped(demo_window):
    texts = demo_window.texts_by_day()["2022-05-31"][:10]
    ids = {t.id for t in texts}
    response = ("- 삼성전자 인수합병 진행 중 [2]\n- 소니, 이미지센서 1위 굳히기 [4]\n"
                "- 화성에 공장을 짓는다 [1]\n- 관련 없는 문장")
    points = cited_points(response, texts, 5)
    assert len(points) == 2  # the Mars plant and the uncited sentence rest on no text
    for point in points:
        cited = {int(x) for x in point.rsplit("[", 1)[1].strip("]").replace("t", "").split(",")}
        assert cited and cited <= ids
    assert all(p.endswith(f"[t{t.id}]") for p, t in zip(extractive_points(texts, 3), texts))


def test_tweets_naming_only_other_stocks_come_last_in_an_extractive_summary():
    """Real tweets of AMT's window of 2022-05-24 (SN2): another ticker's list and a crypto giveaway came
    first by time and were the items the default model cited; the tweet naming $AMT was shown after them.
    A tweet naming no cashtag and a news title keep their places."""
    from sep.window import Text

    day = "2022-05-24"
    texts = [Text(13577, "tweet", day, None, "Just In: $WLL 3 Under-the-Radar Energy Stocks With…", None, None),
             Text(13572, "tweet", day, None, "BREAKING NEWS: $FISV 7 Defensive Growth Stocks to Buy for…", None, None),
             Text(13583, "tweet", day, None, "RT @OlympusGameP2E: #Giveaways truly never stop🎉 We are…", None, None),
             Text(13585, "tweet", day, None, "$AMT - https://t.co/RodZoQ9OE7 - American Tower…", None, None),
             Text(13590, "tweet", day, None, "RT @x: $amt $CCI towers lease up", None, None)]
    ids = [p.rsplit("[", 1)[1].strip("]") for p in extractive_points(texts, 3, "AMT")]
    assert ids == ["t13583", "t13585", "t13590"]  # the giveaway names no stock: it is not this rule's to move
    assert [p.rsplit("[", 1)[1].strip("]") for p in extractive_points(texts, 2)] == ["t13577", "t13572"]


def test_a_point_holding_a_number_its_cited_titles_do_not_is_dropped():
    """The default model's summary of 2022-05-18 (the 67-stock-day run), on real titles of the day: it
    gave Samsung a KOSPI-wide figure and moved numbers between stories. A point keeps its place only
    when its cited titles hold its numbers; the subject swapped onto a right number is not caught."""
    from sep.window import Text

    titles = {500: "코스피 순이익, 삼성전자 빼면 26% 급감했다 [상장사 1분기 실적]",
              501: "코스피 상장사 1분기 영업이익 14%↑…삼성전자 빼면 4%",
              510: "대우조선, 대금 미지급에 러 계약 해지…현대·삼성重도 번지나",
              553: "[특징주]삼성전자·SK하이닉스 강세…미국 반도체주 급등"}
    texts = [Text(i, "news", "2022-05-18", None, t, None, None) for i, t in titles.items()]
    response = ("- 삼성전자의 순이익이 26% 감소했다 [1]\n- 삼성전자의 영업이익이 14% 증가했다 [2]\n"
                "- 삼성전자의 순이익이 SK하이닉스보다 4% 증가했다 [4]\n- 삼성전자의 순이익이 대우조선보다 26% 감소했다 [1]\n"
                "- 삼성전자의 순이익이 대금 미지급에 러 계약 해지했다 [3]\n- 삼성전자·SK하이닉스 18일 강세 [4]")
    assert cited_points(response, texts, 6) == [
        "- 삼성전자의 순이익이 26% 감소했다 [t500]",          # the wrong subject, the right number: kept
        "- 삼성전자의 영업이익이 14% 증가했다 [t501]",
        "- 삼성전자의 순이익이 대우조선보다 26% 감소했다 [t500]",
        "- 삼성전자의 순이익이 대금 미지급에 러 계약 해지했다 [t510]",
        "- 삼성전자·SK하이닉스 18일 강세 [t553]"]               # its own day is no invented number
    # its summary of 2022-02-09: one character broken mid-byte (임금 → �금); the point is dropped
    wage = [Text(5184, "news", "2022-02-09", None, '삼성전자 노사협 "임금 15% 이상 올려달라"', None, None)]
    assert cited_points("- 삼성전자, 노사협 \ufffd금 15% 이상 올려달라 [1]", wage, 5) == []
    assert cited_points("- 삼성전자, 노사협 임금 15% 이상 올려달라 [1]", wage, 5) == [
        "- 삼성전자, 노사협 임금 15% 이상 올려달라 [t5184]"]


def flagged_script(kind: str, prompt: str) -> str:
    if kind == "summarize":  # the old instruction, echoed: copied and with an invented date
        return GEMMA_SUMMARY
    if kind == "reflect":  # a lesson that only repeats the instructions' example cannot be learnt from
        return "}}{{ <<<"
    item = re.search(r"^\[(t\d+)\] (.+)$", prompt, flags=re.M)  # cites a real item, then reasons about nothing in it
    return f"근거:\n[{item[1]}] + {' '.join(item[2].split()[:3])}\n판단: 상승\n이유: {GEMMA_EXPLANATION}"


def test_flagged_generations_are_kept_apart(sample_memory, db_path):
    sample_memory.conn.close()
    with FakeOpenAI(flagged_script, owned_by="other") as server:
        done = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--trials", "2", "--json",
                   "--base-url", server.base_url, db=db_path)
        assert done.returncode == 0, done.stderr
        shown = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--trials", "2",
                    "--base-url", server.base_url, db=db_path)
    (out,) = json.loads(done.stdout)
    db = open_memory(db_path)
    # summaries: the model's attempt is kept for inspection, the extractive points are used
    rows = db.execute("SELECT method, flags, attempt, summary FROM summaries").fetchall()
    assert rows and all(m == "extractive" and "invented_dates" in f and a == GEMMA_SUMMARY for m, f, a, _ in rows)
    assert all(s["method"] == "extractive" for s in out["summaries"])
    # explanations: flagged (ungrounded), so not correct even where the label matched, and unparsable in eval
    assert all("ungrounded" in t["flags"] and not t["correct"] for t in out["trials"])
    assert db.execute("SELECT count(*) FROM predictions WHERE flags LIKE '%ungrounded%'").fetchone()[0] == 2
    # reflections: stored with their flag and never recalled
    assert "degenerate" in db.execute("SELECT flags FROM reflections").fetchone()[0]
    agents = Agents(db, None, "ko")
    assert agents.recall(decision_window(db, "005930", "2022-06-10", 5), "삼성") == []
    assert "⚑" in shown.stdout and "counted as unparsable" in shown.stdout and "extractive" in shown.stdout
    report = json.loads(run("eval", "--stock", "005930", "--json", db=db_path).stdout)
    assert report["unparsable"] == 1 and report["flagged"] == {"ungrounded": 1}  # the one forecast, withheld


def test_clean_generations_are_trusted(sample_memory, db_path):
    sample_memory.conn.close()
    with FakeOpenAI(lambda kind, p: cite_all(p) if kind == "summarize" else echo_reason(p, "하락")) as server:
        done = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--json", "--base-url", server.base_url,
                   db=db_path)
    (out,) = json.loads(done.stdout)
    assert all(s["method"] == "model" and s["flags"] == [] for s in out["summaries"])
    assert out["trials"][0]["flags"] == [] and out["trials"][0]["correct"]


def test_prompt_files_are_chats_without_inline_examples():
    for lang in ("ko", "en"):
        for name in ("summarize", "explain", "reflect", "judge"):
            prompt = load_prompt(lang, name)
            messages = prompt.messages(stock="005930", name="삼성전자", company="삼성전자(005930)", date="2022-06-01",
                                       start="2022-05-28", texts="[1] x", summaries="[2022-06-01] - x", reflections="",
                                       response="상승\nx", actual="하락", label="상승", explanation="x", max_points=5)
            assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
            assert "예시" not in messages[0]["content"] and "Example" not in messages[0]["content"]


def test_a_user_prompt_folder_overrides_the_package(tmp_path: Path):
    from sep.errors import BadInput

    (tmp_path / "ko").mkdir()
    (tmp_path / "ko" / "explain.toml").write_text('system = "S"\nuser = "U {date}"\n', encoding="utf-8")
    assert load_prompt("ko", "explain", tmp_path).messages(date="D")[-1]["content"] == "U D"
    # a file the folder doesn't hold stays packaged; a folder that doesn't exist is bad input
    assert load_prompt("ko", "summarize", tmp_path).version == load_prompt("ko", "summarize").version
    with pytest.raises(BadInput, match="The prompts folder .*nope does not exist"):
        load_prompt("ko", "summarize", tmp_path / "nope")


def test_an_english_prompt_says_so_in_english(sample_memory):
    """sn2-style stocks get English prompts; a window without news must not read "(정보 없음)"."""
    window = decision_window(sample_memory, "005930", "2022-02-14", 5)  # the sample's news starts in May
    variables = Agents(sample_memory, None, "en").explain_variables(window, [], [])
    assert variables["summaries"] == "(no information)"
    text = load_prompt("en", "explain").messages(**variables)[-1]["content"]
    assert "삼성전자(005930)" in text  # the company's name is data; everything else is English
    assert not any("\uac00" <= ch <= "\ud7a3" for ch in text.replace("삼성전자", ""))


def test_one_huge_title_cannot_fill_a_prompt(sample_memory, tmp_path):
    """A 100 KB title is cut to its share, and a day's texts stop at the prompt budget."""
    from sep.agents import MAX_DAY_CHARS, day_texts
    from sep.evidence import MAX_TITLE_CHARS
    from sep.ingest import import_texts

    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps({"stock": "005930", "date": "2022-06-01", "title": f"{i} " + "가" * 100_000})
                             for i in range(30)), encoding="utf-8")
    import_texts(sample_memory, [big])
    window = decision_window(sample_memory, "005930", "2022-06-01", 1)
    texts = day_texts(window.texts_by_day()["2022-06-01"])
    assert sum(min(len(t.title), MAX_TITLE_CHARS) for t in texts) <= MAX_DAY_CHARS
    shown = extractive_points(texts, 40)
    assert shown and max(len(p) for p in shown) < MAX_TITLE_CHARS + 20


def test_prompts_fit_the_models_context_by_its_own_tokenizer(sample_memory):
    """The embedded model's tokenizer measures each prompt: a day's texts are cut until the summary
    prompt fits, and what cannot fit is refused with a sentence naming the text and the limit."""
    from sep.agents import MAX_TOKENS, day_texts
    from sep.errors import PromptTooLong
    from sep.backends import make_llm
    from sep.settings import Settings
    from sep.window import Text

    cfg = Settings(model="gemma-270m", context=1024)
    agents = Agents.for_stock(sample_memory, make_llm(cfg), "005930", cfg)
    day = day_texts(decision_window(sample_memory, "005930", "2022-05-31", 1).texts_by_day()["2022-05-31"])
    fitted = agents.fit_texts("005930", "2022-05-31", day)
    assert 1 <= len(fitted) < len(day) and fitted == day[:len(fitted)]
    tokens = agents.llm.prompt_tokens_of(agents.prompts["summarize"].template,
                                         agents._summary_variables("005930", "2022-05-31", fitted))
    assert tokens <= 1024 - MAX_TOKENS["summarize"] - 8
    agents.llm.context = 300  # smaller than the prompt's own instructions: nothing fits
    huge = Text(123, "news", "2022-05-31", None, "반도체 " * 200, None, None)
    with pytest.raises(PromptTooLong, match=r"Text 123 of 005930 on 2022-05-31 .*at most 92"):
        agents.fit_texts("005930", "2022-05-31", [huge])


def test_one_date_reader_for_gate_and_audit():
    from sep.quality import dates_in

    text = "2022년 6월 2일 실적, 6월 15일 FOMC, 6/3 공시, 2022.05.31 종가, 13월 40일"
    assert dates_in(text) == ["2022-05-31", "2022-06-02"]  # full dates only without a year to read month-days in
    assert sorted(dates_in(text, 2022)) == ["2022-05-31", "2022-06-02", "2022-06-03", "2022-06-15"]


# ---------------------------------------------------------------- issue 22: numbers, pastes, fusions, evidence

# What the default model (Qwen2.5-Coder-1.5B) wrote, as issue 22 measured it. LLY's tweets of 2020-09 are not in
# ../shared/data (sn2 holds LLY's prices only), so its inputs here are stand-ins that hold none of the numbers.
LLY_SUMMARY = "- LLY's dividend history spans over 100 years, with the first dividend in 1816 [2]"
LLY_POINTS = ["Eli Lilly raises its quarterly dividend and keeps its outlook",
              "Lilly's Verzenio trial meets its primary endpoint in early breast cancer",
              "Analysts see Mounjaro sales lifting revenue next year",
              "Lilly shares hit a record high after the trial news"]
LLY_EXPLANATION = (" ".join(p + "." for p in LLY_POINTS) + " The company's stock price is expected to rise as a result "
                   "of its strong financial performance and positive news.")
# The sample's titles behind two points the default model fused (summaries of 05-28 and 05-31, measured)
T98 = "'바이든 삼성 방문'에 떠들썩…조용히 '반도체 칼' 가는 日 [강경주의..."
T99 = "“대만 반도체 사업 게섯거라” 삼성 파운드리 생태계 강화 나서나[비즈3..."
T25 = "(영상)협력 강화하는 삼성·인텔, 적과의 동침 '윈윈' 할까"
FUSED_0528 = ("- 삼성전자의 반도체 칼을 가는 바이든 방문에 대해 조용히 반도체 사업 게섯거라며 강경주의 반도체 사업 강화 나서나에 대해 "
              "비즈365에 대해 설명합니다 [2]")
FUSED_0531 = "- (영상)협력 강화하는 삼성·인TEL, 적과의 동침 '윈윈' 할까 [1]"
# Points the same model wrote faithfully on 05-29, 05-30 and 06-01, with the titles they cite
GOOD_POINTS = [
    ("삼성전자, 세계 스마트폰 점유율 2017년 이후 ‘최고’…중 봉쇄 효과", "삼성전자, 세계 스마트폰 점유율 2017년 이후 ‘최고’…중 봉쇄 효과"),
    ("삼성전자, 7400W 고화력 비스포크 인피니트 인덕션 출시", "삼성전자, 7400W 고화력 '비스포크 인피니트 라인' 인덕션 출시"),
    ("삼성전자 부회장과 팻 겔싱어 인텔 CEO 만나 상호협력 약속", "이재용 삼성전자 부회장, 팻 겔싱어 인텔 CEO 만나 상호협력 약속(상..."),
    ("삼성 MX사업부 1년만에 경영진단", "[단독] 삼성 MX사업부 1년만에 경영진단"),
    ("삼성전자 부회장 주식평가액 1.1조원 줄었다", "올들어 이재용 삼성전자 부회장 주식평가액 1.1조원 줄었다"),
    ("삼성 세탁기·건조기 신제품 동시구매시 최대 20만원 할인", "삼성 세탁기·건조기 신제품 동시구매시 최대 20만원 할인"),
]


def test_numbers_are_read_as_amounts():
    from sep.quality import invented_numbers, numbers_in

    assert [n.value for n in numbers_in("영업이익 14조1000억원, 순이익 1.1조원, 목표가 6만원, 3.5% 하락")] == \
        [14.1e12, 1.1e12, 6e4, 3.5]
    assert [n.value for n in numbers_in("revenue of $1.2 billion, up 13%")] == [1.2e9, 13.0]
    assert numbers_in("- 삼성 MX사업부 경영진단 [1, 3] [t57]") == []  # citations are not numbers
    assert [n.value for n in numbers_in("14조 1000억, 6만 5000원, 6만5000, 6만 5천원")] == [14.1e12, 65e3, 65e3, 65e3]
    # an amount's neighbours are not its remainder: a year after it, the same unit again
    assert [n.value for n in numbers_in("투자 1000억 2017년 이후")] == [1e11, 2017.0]
    assert [n.value for n in numbers_in("3천억 2천억")] == [3e11, 2e11]
    assert invented_numbers("14조1000억원 2017년", "2017년 영업이익 14조 1000억 2017 기록") == []
    titles = "삼성전자 2분기 영업이익 14조1000억원…주가 6만원대"
    assert invented_numbers("영업이익 14.1조원", titles) == []            # the same amount, written differently
    assert invented_numbers("영업이익 14조원으로", titles) == []           # rounded
    assert invented_numbers("영업이익 15조원", titles) == ["15조"]        # not in any input
    assert invented_numbers("주가 60,000원", titles) == []
    assert invented_numbers("2017년 이후 최고", "점유율 2017년 이후 ‘최고’") == []
    assert invented_numbers("2018년 이후 최고", "점유율 2017년 이후 ‘최고’") == ["2018"]  # a year is never rounded


def test_the_measured_inventions_pastes_and_fusions_are_flagged():
    summary = Check("", "\n".join(LLY_POINTS), "2020-09-15", "2020-09-15", kind="summary")
    assert "invented_numbers" in summary.flags(LLY_SUMMARY)
    assert summary.why(LLY_SUMMARY)["invented_numbers"] == "100, 1816"
    explanation = Check("", "\n".join(f"- {p}" for p in LLY_POINTS), "2020-09-11", "2020-09-15", kind="explanation")
    assert "pasted" in explanation.flags(LLY_EXPLANATION)
    assert "pasted" not in explanation.flags("Lilly's trial success and a higher dividend point to more buying "
                                             "tomorrow, since the market tends to reward new drug approvals.")
    day = Check("", "\n".join([T98, T99]), "2022-05-28", "2022-05-28", kind="summary")
    assert {"fused", "invented_numbers"} <= set(day.flags(FUSED_0528))  # bylines woven in; 365 from "[비즈3..."
    assert "tag word" in day.why(FUSED_0528)["fused"]
    assert "fused" in Check("", T25, "2022-05-31", "2022-05-31", kind="summary").flags(FUSED_0531)


def test_faithful_points_are_not_flagged():
    from sep.quality import fused, invented_numbers

    for point, title in GOOD_POINTS:  # a day of good points: no false positive
        assert fused(point, title) is None, point
        assert invented_numbers(point, title) == [], point
    assert fused("[단독] 삼성 MX사업부 1년만에 경영진단", "[단독] 삼성 MX사업부 1년만에 경영진단") is None  # a tag kept as a tag


def test_the_default_models_evidence_is_checked():
    """Its evidence-first answer on 2022-06-01 (measured, before the grammar kept it to three items of the
    window): it cited t12 with another item's words, pointed its evidence down and answered 상승, and its
    reason is the items pasted."""
    from sep.evidence import resolve_evidence
    from sep.llm import parse_answer

    response = ("근거:\n[t11] - 머나먼 탈출 목표가 낮아지는 목표가\n"
                "[t12] - 주가 대체 어디로 \"경영진도 근심 가득\"…6만원까지 또 미끄러…\n"
                "[t7] + 주가 대체 어디로 \"경영진도 근심 가득\"…6만원까지 또 미끄러…\n"
                "[t6] - 삼성 세탁기·건조기 신제품 동시구매시 최대 20만원 할인\n[t3] - 부회장 주식평가\n판단: 상승\n"
                "이유: 머나먼 탈출 목표가 낮아지는 목표가 있고, 주가 대체 어디로 \"경영진도 근심 가득\"…6만원까지 또 미끄러운 "
                "정보가 있습니다.")
    items = [{"item": f"t{i}", "day": d, "point": p, "texts": [i]} for i, d, p in [
        (12, "2022-05-31", "삼성전자 인수합병 진행 중"),
        (7, "2022-06-01", "삼성전자 주가 대체 어디로 \"경영진도 근심 가득\"…6만원까지 또 미끄러…"),
        (3, "2022-06-01", "삼성전자 부회장 주식평가액 1.1조원 줄었다"),
        (6, "2022-06-01", "삼성 세탁기·건조기 신제품 동시구매시 최대 20만원 할인"),
        (11, "2022-06-01", "삼성전자 머나먼 '6만전자' 탈출의 길…낮아지는 목표가")]]
    answer = parse_answer(response, "ko", "판단:")
    assert answer.label == "up" and [e["item"] for e in answer.evidence] == ["t11", "t12", "t7", "t6", "t3"]
    cited, flags = resolve_evidence(answer, items)
    # its t12 quotes t7's point: read as t7 (and the later [t7] is the same item); three count
    assert [(c["item"], c.get("cited_as")) for c in cited] == [("t11", None), ("t7", "t12"), ("t6", None)]
    assert flags == ["repeated_citation", "stance_mismatch"]  # t7 twice (once as t12), and three − under 상승
    inputs = "\n".join(f"[{i['item']}] {i['point']}" for i in items)
    assert "pasted" in Check("", inputs, "2022-05-28", "2022-06-01", kind="explanation").flags(answer.explanation)
    answer.evidence.append({"item": "t999", "direction": "+", "note": "없는 글"})
    assert "unknown_citation" in resolve_evidence(answer, items)[1]  # an id the window never showed


@pytest.mark.parametrize("reason, way", [
    # the default model's retry of 2022-05-24 under 상승, its reason copied from the recalled lesson
    ("이번 주의 신제품·기술 소식들은 다음 거래일에 상승일 종가가 떨어질 가능성이 높습니다.", "down"),
    # its forecast of 2022-05-13 under 상승: a headline's "주가 하락 과도-KB" read as KB forecasting a fall
    ("가격이 두자릿수 인상 검토가 진행되고, 영업익이 더 커지나 과도-KB가 주가 하락을 예상하고 있습니다.", "down"),
    ("약간의 영업익 증가는 주가를 상승시키는 기회가 있으나, 최신폰이 줄어선 의미가 있어 하락을 예측한다.", "down"),
    ("영업이익 개선으로 주가는 상승할 것으로 예상됩니다.", "up"),
    ("수요 둔화 우려가 있어 주가가 상승할 가능성은 낮습니다.", "down"),   # a denied forecast points the other way
    ("The next day's gains are also large, so the next trading day's close is likely to be above the last close.", "up"),
    ("Margins are shrinking, so the stock will likely fall.", "down"),
    # no forecast of the price: past facts, and words the lexicon of `sep audit` misreads
    ("시총이 상승했고 수요 약세에도 낸드 점유율이 늘어났습니다.", None),
    ("There have been no negative comments or updates on its performance.", None),
    ("Shares are unlikely to rise.", None),
    # a rise that is not the price's: its forecast of 2022-02-09 under 하락
    ("하이닉스 지수 훈풍에 강세하고, 노사협 임금이 상승할 것으로 예상되는 상황이 있습니다.", None),
    ("AMT's dividend is expected to increase by 2.1%", None),
    # a reason that says which side weighs more (the default model under Negative, jobs/learning.toml, SN2 2022-05)
    ("The negative news about orders and contracts is outweighed by the positive news about the company's portfolio "
     "and pipeline.", "up"),
    ("The negative news about price action moves the close less than it seems. The positive news about the clinical "
     "trial is more significant.", "up"),
    ("The positive news items (ABBV's performance and new article) outweigh the negative news items (ABBV's "
     "shareholder reminder and press release).", "up"),
    ("The news about the data center deals is neutral, but the overall tone is positive.", "up"),
    ("긍정적인 실적 소식보다 부정적인 수급 소식이 더 크다.", None),  # the side before 보다 is the weaker: not read
    ("부정적인 수급 소식이 긍정적인 실적 소식보다 크다.", "down"),
    ("전반적으로 긍정적인 소식이 많습니다.", "up"),
    ("부정적인 소식이 긍정적인 소식보다 크지 않습니다.", "up"),  # denied: the other way
    ("These are less significant than the news about price action moving the next day's close.", None),
    ("The other items are neutral or slightly negative, but the retracement is the most significant factor.", None),
])
def test_a_reason_concludes_the_way_its_last_forecast_of_the_price_points(reason, way):
    assert concluded(reason) == way
