"""Explanations that hold together: the label derived from the judged directions of the cited items
(the grammar and regex hold it), the gate still withholding an answer that contradicts its own
evidence, and lessons in their fixed shape, checked for being general."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from sep.evidence import check_evidence, evidence_up_probability, resolve_evidence, window_stance
from sep.llm import parse_answer
from sep.shapes import AnswerShape, LessonShape, derived_label, shape_from_regex
from sep.prompting import PROMPTS_DIR, load_prompt
from sep.quality import Check, reanswer, specific

from conftest import run
from fake_openai import FakeOpenAI, cite_all

SIGNS = (("t1", "+"), ("t2", "-"), ("t3", "0"), ("t4", "+"))
SHAPE = AnswerShape("상승", "하락", "판단:", "근거:", (), 3, SIGNS)


def test_the_label_follows_the_net_direction_of_the_cited_items():
    assert [derived_label(n) for n in (2, 1, 0, -1, -3)] == ["up", "up", None, "down", "down"]
    for seq, fixed in SHAPE.sequences():
        assert fixed == derived_label(seq.count("+") - seq.count("-"), "상승", "하락")
    assert len(SHAPE.sequences()) == 3 + 9 + 27  # every sequence of 1-3 directions over +, -, 0
    assert SHAPE.fixed_label("근거:\n[t1] + 수주\n[t3] 0 일정\n") == "상승"
    assert SHAPE.fixed_label("근거:\n[t1] + 수주\n[t2] - 감원\n") is None  # a tie: the model's call
    assert SHAPE.fixed_label("근거:\n[t2] - 감원\n[t2] - 감원\n[t4] + 증설\n") == "하락"


WEIGHTED = dataclasses.replace(SHAPE, weights=(("t1", 0.2), ("t2", -0.9), ("t3", 0.1), ("t4", 0.6)))


def test_a_tie_goes_the_way_the_cited_items_weigh():
    """The default model broke 4 of 41 ties against the heavier side, so its label's own confidence
    (the cited items' weight) was below 0.5. With the items' weights a tie is theirs; a count that is
    not a tie still decides (+ weak, + weak, - strong stays up: the confidence then says < 0.5)."""
    assert WEIGHTED.fixed_label("근거:\n[t1] + 수주\n[t2] - 감원\n") == "하락"  # 0.2 - 0.9
    assert WEIGHTED.fixed_label("근거:\n[t3] 0 일정\n") == "상승"
    assert WEIGHTED.fixed_label("근거:\n[t4] + 증설\n[t3] 0 일정\n[t2] - 감원\n") == "하락"  # 0.6 + 0.1 - 0.9
    assert WEIGHTED.fixed_label("근거:\n[t1] + 수주\n[t4] + 증설\n[t2] - 감원\n") == "상승"  # the count: +1
    assert SHAPE.fixed_label("근거:\n[t1] + 수주\n[t2] - 감원\n") is None  # without weights, the model's call
    # the grammar stops a tie at the marker, where the backend writes the label the weights fix
    assert 'itemp itemn "판단: " |' in WEIGHTED.gbnf() and 'itemp itemp itemn "판단: " "상승"' in WEIGHTED.gbnf()
    assert WEIGHTED.regex() == SHAPE.regex()  # vLLM's regex can't weigh: a tie stays the model's there
    from langchain_core.prompts import ChatPromptTemplate

    from sep.backends.mock import mock_llm

    says_up = mock_llm(lambda agent, prompt: "근거:\n[t1] + 수주\n[t2] - 감원\n판단: 상승\n이유: 수주.")
    message = says_up.ask(ChatPromptTemplate.from_messages([("human", "q")]), {}, shape=WEIGHTED, agent="explain")
    assert "판단: 하락" in str(message.content)


def test_the_embedded_model_writes_the_label_a_tie_weighs(tiny):
    """llama.cpp under the grammar (a tiny random Qwen2): every item is neutral, so every answer is a
    tie, and each label is the sign of its cited items' weight."""
    from langchain_core.messages import HumanMessage

    from transformers import AutoTokenizer

    from sep.backends.embedded import EmbeddedChatModel

    folder, gguf = tiny
    shape = AnswerShape("상승", "하락", "판단:", "근거:", (), 3, (("t1", "0"), ("t2", "0")),
                        quotes=(("t1", "수주 확대"), ("t2", "감원 발표")), weights=(("t1", 0.3), ("t2", -0.5)))
    template = AutoTokenizer.from_pretrained(folder).chat_template
    chat = EmbeddedChatModel(model_name="tiny", model_path=str(gguf), chat_template=template, n_ctx=512)
    seen = set()
    for seed in range(6):
        text = str(chat.invoke([HumanMessage("뉴스를 보고 판단하라")], answer_shape=shape, temperature=1.0, seed=seed,
                               max_tokens=40).content)
        cited = re.findall(r"^\[(t\d)\] 0 ", text, flags=re.M)
        label = re.search(r"^판단: (상승|하락)$", text, flags=re.M).group(1)
        assert label == ("상승" if sum({"t1": 0.3, "t2": -0.5}[i] for i in set(cited)) > 0 else "하락"), text
        seen.add((tuple(sorted(set(cited))), label))
    assert len(seen) >= 2, seen  # the samples cited differently


@pytest.mark.parametrize("answer, allowed", [
    ("[t1] + 수주 확대\n판단: 상승", True),
    ("[t1] + 수주 확대\n판단: 하락", False),          # against its evidence
    ("[t1] - 수주 확대\n판단: 하락", False),          # not the item's judged direction
    ("[t2] - 감원\n[t3] 0 일정\n판단: 하락", True),
    ("[t1] + 수주\n[t2] - 감원\n판단: 하락", True),     # a tie: either label
    ("[t1] + 수주\n[t2] - 감원\n판단: 상승", True),
    ("[t3] 0 일정\n판단: 상승", True),
    ("[t4] + 증설\n[t1] + 수주\n[t2] - 감원\n판단: 하락", False),
    ("[t9] + 없는 항목\n판단: 상승", False),          # not a window id
])
def test_the_regex_holds_the_derived_shape(answer, allowed):
    text = f"근거:\n{answer}\n이유: 두 문장의 이유."
    assert bool(re.fullmatch(SHAPE.regex(), text)) == allowed
    assert shape_from_regex(SHAPE.regex()) == SHAPE


QUOTED = dataclasses.replace(SHAPE, quotes=(("t1", "[단독] 수주 (1.5조) | 확대"), ("t2", "감원 발표"), ("t3", "일정 공개"),
                                             ("t4", "증설 " + "가" * 70), ("t1", "수주 둘째 점")))


@pytest.mark.parametrize("answer, allowed", [
    ("[t1] + [단독] 수주 (1.5조) | 확대\n판단: 상승", True),
    ("[t1] + 수주 둘째 점\n[t2] - 감원 발표\n판단: 하락", True),    # either point of one text
    ("[t4] + 증설 " + "가" * 56 + "…\n판단: 상승", True),               # a long item cut at 60 characters
    ("[t1] + 수주 확대\n판단: 상승", False),                           # a gloss, not the item's words
    ("[t2] + 감원 발표\n판단: 상승", False),                           # not its direction
    ("[t2] - 일정 공개\n판단: 하락", False),                           # another item's words
])
def test_a_quoted_derived_line_is_its_items_own_words(answer, allowed):
    """The default model's glosses garbled one cited item in six, so a derived answer's lines are its
    items' words: the model chooses the items (and so the label), the grammar writes what they say."""
    text = f"근거:\n{answer}\n이유: 두 문장의 이유."
    assert bool(re.fullmatch(QUOTED.regex(), text)) == allowed
    assert shape_from_regex(QUOTED.regex()) == QUOTED  # an offline request file gives the same grammar back
    assert '"[t1] + [단독] 수주 (1.5조) | 확대\\n"' in QUOTED.gbnf() and "note ::=" not in QUOTED.gbnf()
    answer = parse_answer(text, "ko", "판단:")
    assert [e["note"] for e in answer.evidence] == [line.split(" ", 2)[2] for line in text.splitlines()[1:-2]]
    with pytest.raises(ValueError):
        dataclasses.replace(SHAPE, quotes=(("t1", "수주"),))  # every id needs its words


def test_the_grammar_names_every_direction_class():
    grammar = SHAPE.gbnf()
    assert 'itemp ::= "[" ( "t1" | "t4" ) "] + " note "\\n"' in grammar
    assert 'itemn ::= "[" ( "t2" ) "] - " note "\\n"' in grammar
    assert 'itemz ::= "[" ( "t3" ) "] 0 " note "\\n"' in grammar
    assert 'itemp itemp itemn "판단: " "상승"' in grammar and 'itemp itemn "판단: " label' in grammar


def test_the_confidence_is_the_cited_items_stance():
    items = [{"item": "t1", "day": "d", "point": "수주", "texts": [1], "stance": {"positive": 0.8, "neutral": 0.1, "negative": 0.1}},
             {"item": "t2", "day": "d", "point": "감원", "texts": [2], "stance": {"positive": 0.1, "neutral": 0.2, "negative": 0.7}},
             {"item": "t3", "day": "d", "point": "일정", "texts": [3], "stance": {"positive": 0.1, "neutral": 0.8, "negative": 0.1}}]
    answer = parse_answer("근거:\n[t1] + 수주\n[t3] 0 일정\n판단: 상승\n이유: 수주가 늘었다.", "ko", "판단:")
    cited, flags = resolve_evidence(answer, items)
    assert flags == [] and [c["item"] for c in cited] == ["t1", "t3"]
    assert evidence_up_probability(cited) == pytest.approx(0.5 + 0.5 * (0.7 + 0.0) / 2)
    assert window_stance(items) == pytest.approx((0.7 - 0.6 + 0.0) / 3)
    # one item on two lines (the default model's 2022-05-16): its direction counted twice fixed the label
    twice = parse_answer("근거:\n[t1] + 수주\n[t1] + 수주\n[t2] - 감원\n판단: 상승\n이유: 수주가 늘었다.", "ko", "판단:")
    cited, flags = resolve_evidence(twice, items)
    assert flags == ["repeated_citation"] and [c["item"] for c in cited] == ["t1", "t2"]


# the default model's window on 2022-05-23 (the demo's memory): points and judged stances as measured
MAY_23 = [("t426", "이재용 \"삼성전자 반도체 혁신, 전 세계 모든 분들 덕분\"", (0.83, 0.13, 0.04)),
          ("t429", "3나노 선점한 삼성…반도체 고객·장비 확보, 대형 M&A도 탄력", (0.70, 0.25, 0.05)),
          ("t414", "\"TSMC 보고 있나\"…바이든 앞 'GAA 3나노' 뽐낸 삼성전자 [강...", (0.24, 0.39, 0.37)),
          ("t415", "삼성전자 1분기 R&D에만 6조원 쐈다…특허획득 건수 봤더니 [비즈36...", (0.25, 0.49, 0.26)),
          ("t367", "삼성전자, 2800곳에 스마트공장 구축 지원", (0.63, 0.34, 0.03)),
          ("t368", "삼성·현대차가 韓 최고 전략자산…한미 공급망 동맹 중심축됐다", (0.52, 0.35, 0.13))]


def may_23_items() -> list[dict]:
    return [{"item": i, "day": "2022-05-21", "point": p, "texts": [int(i[1:])],
             "stance": dict(zip(("positive", "neutral", "negative"), s)),
             "sign": "+" if s[0] > max(s[1:]) else "-" if s[2] > max(s[:2]) else "0"} for i, p, s in MAY_23]


def test_a_derived_item_quoting_another_is_read_as_the_one_it_quotes_with_its_direction():
    """The default model's trial 0 on 2022-05-23 wrote t414 with t426's words and t426 with t429's
    (each under the id's own judged direction). Read as shown, the evidence named the wrong items; read
    as what it quoted, each carries the quoted item's direction, and the label is checked against those."""
    response = ("근거:\n[t415] 0 R&D에만 6조원 쐈다…특허획득 건수 봤더니\n"
                "[t414] 0 이재용 \"삼성전자 반도체 혁신, 전 세계 모든 분들 덕분\"\n"
                "[t426] + 3나노 선점한 삼성…반도체 고객·장비 확보, 대형 M&A도 탄력\n판단: 상승\n"
                "이유: R&D에 6조원을 쓴 것은 성장에 도움이 된다. 혁신과 고객 확보가 이어진다.")
    answer = parse_answer(response, "ko", "판단:")
    cited, flags = resolve_evidence(answer, may_23_items())
    assert [(c["item"], c.get("cited_as"), c["direction"]) for c in cited] == [
        ("t415", None, "0"), ("t426", "t414", "+"), ("t429", "t426", "+")]
    assert flags == []
    # the same shift under 하락: the quoted items are good news, so the label contradicts its evidence
    down = parse_answer(response.replace("판단: 상승", "판단: 하락").replace("[t414] 0", "[t414] -"), "ko", "판단:")
    assert resolve_evidence(down, may_23_items())[1] == ["stance_mismatch"]


# the base arm's AMT window of 2022-05-20 and sft's CMCSA window of 2022-05-31 (the 67-stock-day run): real points
AMT_20 = [("t28644", "The data they'll get from $ASTS subscriber distribution data will help $AMT optimize their tower "
                     "infrastructure"),
          ("t28646", "AMT's dividend is expected to increase by 2.1%")]
CMCSA_31 = [("t23588", "Comcast Corporation's quarterly revenue growth rate YoY of 14.00% ranked 2080 out of 5715 companies")]


@pytest.mark.parametrize("response, points, flagged", [
    # the base arm's answer: t28646's words under t28644, read as the item it quotes, whose number it is
    ("Evidence:\n[t28644] + AMT's dividend is expected to increase by 2.1%\nDecision: Positive\nWhy: Dividends grow.",
     AMT_20, False),
    # the number of another item carried under this id in its own words: the window holds 2.1%, t28644 does not
    ("Evidence:\n[t28644] + $ASTS data will help $AMT optimize towers, up 2.1%\nDecision: Positive\nWhy: Towers pay.",
     AMT_20, True),
    # a direction mark copied from the prompt is no number of the note's
    ("Evidence:\n[t28646] + (0) AMT's dividend is expected to increase by 2.1%\nDecision: Positive\nWhy: Dividends grow.",
     AMT_20, False),
    # a note cut by its 60-character cap mid-number ("14.00%" → "1") quotes its item rightly
    ("Evidence:\n[t23588] + Comcast Corporation's quarterly revenue growth rate YoY of 1\nDecision: Positive\n"
     "Why: Revenue grows.", CMCSA_31, False),
    ("Evidence:\n[t23588] + Comcast's revenue growth rate YoY of 19% beat 5715 peers\nDecision: Positive\n"
     "Why: Revenue grows.", CMCSA_31, True),
])
def test_a_cited_reason_holds_only_its_own_items_numbers(response, points, flagged):
    items = [{"item": i, "day": "2022-05-19", "point": p, "texts": [int(i[1:])]} for i, p in points]
    answer = parse_answer(response, "en", "Decision:")
    check = Check("", "\n".join(f"[{i}] {p}" for i, p in points), "2022-05-13", "2022-05-20", kind="explanation")
    assert ("invented_numbers" in check_evidence(answer, items, check)) is flagged


def test_a_story_repeated_on_later_days_is_shown_once_on_its_last_day():
    """AMT's window of 2022-05-10 in the 67-stock-day run (real points): one crypto ad, kept by each
    day's dedup, summarized on 05-07, 05-08 and 05-10."""
    from sep.evidence import window_items

    summaries = [("2022-05-07", "- AMT gains 167% on C98 at Cryptotraders, stop missing out on these gains! [t28624]"),
                 ("2022-05-08", "- AMT gains 167% on C98 at Cryptotraders, stop missing out on these gains! [t28626]"),
                 ("2022-05-09", "- RT @DarthDividend23: Dividend Growth Stocks to Buy! Stocks: $DE 1.11% $AAPL 0.58% [t28627]"),
                 ("2022-05-10", "- SweepCast observed unusual options on AMT with a scanner on $270 PUT [t28632]\n"
                                "- AMT gained 167% on $C98 at Cryptotraders, stopping missing out on these gains! [t28631]")]
    items = window_items(summaries)
    assert [(i["item"], i["day"]) for i in items] == [
        ("t28627", "2022-05-09"), ("t28632", "2022-05-10"), ("t28631", "2022-05-10")]
    assert window_items(summaries[:1] + summaries[2:3]) == [
        {"item": "t28624", "day": "2022-05-07", "point": summaries[0][1][2:-9], "texts": [28624]},
        {"item": "t28627", "day": "2022-05-09", "point": summaries[2][1][2:-9], "texts": [28627]}]


LESSON_23 = "규제·소송 소식은 다음 날 종가를 움직이는 힘이 보기보다 작으니, 창의 다른 근거와 견주어 가볍게 본다."


@pytest.mark.parametrize("note, point, echoed", [
    ("스마트공장 구축 지원은 창의적인 근거로 가볍게 본다.", MAY_23[4][1], True),  # the retry's reasons, measured
    ("韓 최고 전략자산은 창의적인 근거로 가볍게 본다.", MAY_23[5][1], True),
    ("스마트공장 구축 지원으로 협력사 생산성이 오른다", MAY_23[4][1], False),
    ("R&D에만 6조원 쐈다…특허획득 건수 봤더니", MAY_23[3][1], False),
    ("규제 소송 소식이 다음 날 종가를 움직인다", "반도체 특허 소송 패소", True),
    ("특허 소송 패소는 가볍게 본다", "반도체 특허 소송 패소", False),  # one lesson word beside the item's own
])
def test_a_reason_made_of_a_recalled_lessons_words_is_flagged(note, point, echoed):
    from sep.quality import echoed_lesson

    assert echoed_lesson(note, point, (LESSON_23,)) is echoed
    assert echoed_lesson(note, point, ()) is False


def test_the_gate_flags_an_answer_whose_reasons_echo_a_lesson():
    response = ("근거:\n[t367] + 스마트공장 구축 지원은 창의적인 근거로 가볍게 본다.\n"
                "[t368] + 韓 최고 전략자산은 창의적인 근거로 가볍게 본다.\n판단: 상승\n이유: 지원과 동맹이 힘이 된다.")
    inputs = "\n".join(f"[{i}] {p}" for i, p, _ in MAY_23)
    for lessons, flagged in (((LESSON_23,), True), ((), False)):
        answer = parse_answer(response, "ko", "판단:")
        check = Check("", inputs + "\n" + "\n".join(lessons), "2022-05-19", "2022-05-23", kind="explanation",
                      lessons=lessons)
        assert ("echoed_lesson" in check_evidence(answer, may_23_items(), check)) is flagged


def one_trial(db_path, script, stance: str) -> tuple[dict, dict]:
    """`sep reflect` on 2022-06-01 of the sample, one trial, against a server running `script` that
    judges every item `stance`: the day and its trial."""
    with FakeOpenAI(script, owned_by="other", stance=lambda text: stance) as server:
        done = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--trials", "1", "--json",
                   "--base-url", server.base_url, db=db_path)
    assert done.returncode == 0, done.stderr
    (day,) = json.loads(done.stdout)
    return day, day["trials"][0]


def test_an_answer_that_contradicts_its_cited_evidence_is_withheld(sample_memory, db_path):
    """A server that ignores the regex: every item judged positive, the answer cites one with + and
    says 하락. The gate flags stance_mismatch and the forecast counts as unanswered."""
    sample_memory.conn.close()

    def contrary(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return cite_all(prompt)
        item = re.search(r"^\[(t\d+)\] \(\+\) (.+)$", prompt, flags=re.M)
        return f"근거:\n[{item[1]}] + {' '.join(item[2].split()[:3])}\n판단: 하락\n이유: {' '.join(item[2].split()[:3])} 소식에도 약세가 이어질 것이다."

    _, trial = one_trial(db_path, contrary, "positive")
    assert trial["label"] == "down" and "stance_mismatch" in trial["flags"] and not trial["correct"]
    assert trial["evidence"][0]["direction"] == "+" and trial["evidence"][0]["stance"]["positive"] > 0.5


def test_an_answer_whose_reason_argues_against_its_label_is_withheld(sample_memory, db_path):
    """A server that follows the shape (every item judged negative, the − item it cites gives 하락, the
    day's actual move) but reasons toward a rise: the gate flags reason_mismatch, and the forecast counts
    as unanswered, so its right label scores nothing."""
    sample_memory.conn.close()

    def against(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return cite_all(prompt)
        item = re.search(r"^\[(t\d+)\] \(-\) (.+)$", prompt, flags=re.M)
        words = " ".join(item[2].split()[:3])
        return f"근거:\n[{item[1]}] - {words}\n판단: 하락\n이유: {words} 소식이 있지만 다음 거래일 종가는 상승할 것으로 예상됩니다."

    day, trial = one_trial(db_path, against, "negative")
    assert day["actual"] == "down" and trial["label"] == "down"
    assert trial["flags"] == ["reason_mismatch"] and not trial["correct"]


def test_the_mock_backend_holds_the_shape_as_a_grammar_would():
    """The scripted backend writes each cited id with its judged direction and the derived label."""
    from langchain_core.prompts import ChatPromptTemplate

    from sep.backends.mock import mock_llm

    llm = mock_llm(lambda agent, prompt: "근거:\n[t2] + 감원 발표\n판단: 상승\n이유: 감원이 비용을 줄인다.")
    message = llm.ask(ChatPromptTemplate.from_messages([("human", "q")]), {}, shape=SHAPE, agent="explain")
    assert str(message.content).startswith("근거:\n[t2] - 감원 발표\n판단: 하락")
    quoted = llm.ask(ChatPromptTemplate.from_messages([("human", "q")]), {}, shape=QUOTED, agent="explain")
    assert str(quoted.content).startswith("근거:\n[t2] - 감원 발표\n판단: 하락")
    script = "근거:\n[t1] + 수주 확대\n판단: 상승\n이유: 수주가 는다."
    quoted = mock_llm(lambda agent, prompt: script).ask(
        ChatPromptTemplate.from_messages([("human", "q")]), {}, shape=QUOTED, agent="explain")
    assert re.fullmatch(QUOTED.regex(), str(quoted.content))  # the gloss became the item's words


LESSON = LessonShape(("오판:", "놓침:", "교훈:"), ("방향", "비중"), "없음", ("t1", "t2"), ("t1", "t2", "t3"))


def test_a_lesson_has_three_lines_held_by_its_regex():
    assert shape_from_regex(LESSON.regex()) == LESSON
    good = "오판: [t2] 비중\n놓침: [t3]\n교훈: 하루 치 수급 소식보다 실적 전망을 더 무겁게 봐야 한다."
    assert re.fullmatch(LESSON.regex(), good)
    assert not re.fullmatch(LESSON.regex(), good.replace("[t2]", "[t3]"))  # misled must be a cited item
    assert not re.fullmatch(LESSON.regex(), good.replace("비중", "운"))
    assert not re.fullmatch(LESSON.regex(), good.replace("[t3]", "[t1]"))  # overlooked: another item
    assert LESSON.parse(good) == {"misled": "t2", "why": "비중", "overlooked": "t3",
                                  "lesson": "하루 치 수급 소식보다 실적 전망을 더 무겁게 봐야 한다."}


@pytest.mark.parametrize("lesson, why", [
    ("하루 치 수급 소식보다 실적 전망을 더 무겁게 봐야 한다.", None),
    ("[t12] 소식을 너무 무겁게 봤다.", "a text id"),
    ("5월 27일의 외국인 매도를 놓쳤다.", "a date"),
    ("2022년 반도체 업황을 먼저 보라.", "a date"),
    ("삼성전자 소식은 외국인 수급이 더 중요하다.", "the company (삼성전자)"),
    ("삼성 계열 소식은 가볍게 본다.", "the company (삼성)"),
    ("악재가 겹치면 하락으로 봐야 한다.", "a label word (하락)"),
    ("Weigh negative guidance above one day's flows.", None),  # an adjective, not the answer word
    ("Next time say Negative when guidance is cut.", "a label word (Negative)"),
])
def test_a_general_lesson_names_no_case(lesson, why):
    names = ("삼성전자(005930)", "삼성전자", "005930", "5930", "삼성")
    got = specific(lesson, names, ("상승", "하락", "Positive", "Negative"))
    assert (got or None) == why


def test_the_gate_flags_a_lesson_that_answers_again():
    check = Check("", "요약: 외국인 순매도, 실적 전망 하향", "2022-05-27", "2022-06-01", kind="lesson",
                  names=("삼성전자",), labels=("상승", "하락"), markers=("판단:", "근거:"))
    assert check.flags("실적 전망이 나쁜 소식은 외국인 수급보다 무겁게 봐야 한다.") == []
    assert "reanswer" in check.flags("근거: 실적 전망 하향 판단: 매도")
    assert "reanswer" in check.flags("[t5] - 실적 전망 하향이 더 중요했다")
    assert reanswer("실적 전망을 본다", ("판단:",)) is False
    assert "specific" in check.flags("삼성전자 실적 전망이 나쁜 소식은 무겁게 봐야 한다.")


def edited_reflect(tmp_path: Path, old: str, new: str) -> Path:
    """A prompts folder whose Korean reflect.toml is the packaged one with `old` replaced by `new`."""
    folder = tmp_path / "prompts" / "ko"
    folder.mkdir(parents=True)
    text = (PROMPTS_DIR / "ko" / "reflect.toml").read_text(encoding="utf-8")
    (folder / "reflect.toml").write_text(text.replace(old, new), encoding="utf-8")
    return tmp_path / "prompts"


def test_a_kinds_cues_decide_before_the_model_is_asked(sample_memory, tmp_path):
    """A headline whose words match one kind's cues most gets that kind without a model call (the
    default model had named 주가 흐름 for the demo's market-share headline); one tied between kinds is
    asked among them only, and one matching none is asked among all. A bad cue pattern is refused
    when the prompt folder is read, in one sentence."""
    from sep.agents import Agents
    from sep.backends.mock import mock_llm
    from sep.errors import BadInput

    asked: list[str] = []

    def say(agent: str, prompt: str) -> str:
        asked.append(prompt)
        return "analyst views" if "Broadcom" in prompt else "주가 흐름"

    for lang, text, said, kind in (
            ("ko", "삼성폰, 지난달 세계시장 점유율 5년 만에 최고…3개월 연속 1위", False, "시장 점유율"),
            ("ko", "삼성전자 7주째 외국인 순매도 1위…언제 오를까", False, "수급"),
            ("en", "Broadcom shares up 3% after earnings beat", True, "earnings"),  # tied: earnings or price action
            ("ko", "'바이든 삼성 방문'에 떠들썩…조용히 '반도체 칼' 가는 日", True, "주가 흐름")):
        agents = Agents(sample_memory, mock_llm(say), lang)
        lesson = agents.prompts["reflect"].lesson
        asked.clear()
        got, p = agents.news_kind(text, lesson["kinds"], lesson.get("hints", ()), lesson["cues"])
        assert (got, bool(asked), p is None) == (kind, said, not said), text
    with pytest.raises(BadInput, match=r"cue '점유율\(' is not a regular expression"):
        load_prompt("ko", "reflect", edited_reflect(tmp_path, '"점유율", ', '"점유율(", '))


def test_the_kind_step_shows_what_each_kind_means(sample_memory, tmp_path):
    """Each kind goes to the model with its line of meaning ([lesson] hints, one per kind); a prompt
    folder whose hints do not match its kinds is refused in one sentence."""
    from sep.agents import Agents
    from sep.backends.mock import mock_llm
    from sep.errors import BadInput

    seen: list[str] = []
    agents = Agents(sample_memory, mock_llm(lambda agent, prompt: "투자·증설"), "ko",
                    on_prompt=lambda agent, text: seen.append(text))
    lesson = agents.prompts["reflect"].lesson
    assert len(lesson["hints"]) == len(lesson["kinds"])
    kind, _ = agents.news_kind("삼성전자 美테일러 공장, 21조 투자 잰걸음", lesson["kinds"], lesson["hints"])
    assert kind == "투자·증설"
    assert "- 투자·증설: 공장 건설, 설비 투자, 투자 금액" in seen[-1] and "- 수급: 외국인" in seen[-1]
    with pytest.raises(BadInput, match="hints"):
        load_prompt("ko", "reflect", edited_reflect(tmp_path, '"시장에서의 순위와 점유율", ', ""))


def test_a_lesson_of_kinds_is_one_kind_and_its_reason_makes_the_rule():
    """With kinds, the last line is one kind of news (the grammar and the regex allow nothing else), and the
    prompt's template for the reason turns it into the lesson that is recalled."""
    shape = dataclasses.replace(LESSON, kinds=("실적", "수급", "주가 흐름"))
    assert shape_from_regex(shape.regex()) == shape
    assert re.fullmatch(shape.regex(), "오판: [t1] 방향\n놓침: 없음\n교훈: 주가 흐름")
    assert not re.fullmatch(shape.regex(), "오판: [t1] 방향\n놓침: 없음\n교훈: 삼성전자 점유율이 높아졌다")
    assert 'lesson ::= "실적" | "수급" | "주가 흐름"' in shape.gbnf()
    prompt = load_prompt("ko", "reflect")
    kinds, templates = prompt.lesson["kinds"], prompt.lesson["templates"]
    assert len(kinds) >= 5 and all("{kind}" in t for t in templates)
    lesson = templates[prompt.lesson["reasons"].index("비중")].format(kind="수급")
    assert lesson.startswith("수급 소식은") and lesson not in prompt.instructions(
        company="", start="", date="", summaries="", response="", actual="")  # never shown: not copyable
    check = Check(prompt.instructions(company="삼성전자", start="", date="", summaries="", response="", actual=""),
                  "[t1] + 외국인 순매수", "2022-05-27", "2022-06-01", kind="lesson", names=("삼성전자",),
                  labels=("상승", "하락"), markers=("판단:", "근거:"))
    assert check.flags(lesson) == []
