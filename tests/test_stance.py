"""The stance step (`sep stance`, `sep.stance`): probabilities read from label-word log-probs,
measured exactly against a server whose skill is set by a hash, files and their errors, the
cache, a trained run's own prompt, and the default model on real Financial PhraseBank rows."""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd
import pytest

from sep.llm import choice_probabilities
from sep.shapes import AnswerShape
from sep.stances import STANCES, Judged, stance_scores, wilson

from conftest import FIXTURES, run
from fake_openai import FakeOpenAI, choice_words

PHRASEBANK = FIXTURES / "phrasebank_excerpt.csv"


def skilled(truth: dict[str, str], p: float):
    """A stance server right with probability p per text, by a hash of the text; wrong answers are
    the next label round the circle (positive → neutral → negative → positive)."""
    def script(prompt: str) -> str:
        gold = truth[" ".join(prompt.split())]
        if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 1000 < p * 1000:
            return gold
        return STANCES[(STANCES.index(gold) + 1) % 3]
    return script


def realized(truth: dict[str, str], p: float) -> float:
    return sum(int(hashlib.sha256(t.encode()).hexdigest(), 16) % 1000 < p * 1000 for t in truth) / len(truth)


def test_a_server_of_known_skill_is_measured_exactly(tmp_path):
    rows = pd.read_csv(PHRASEBANK)
    truth = dict(zip(rows.kor_sentence, rows.label)) | dict(zip(rows.sentence, rows.label))
    with FakeOpenAI(lambda kind, prompt: "-", stance=skilled(truth, 0.7)) as server:
        done = run("stance", str(PHRASEBANK), "--text-column", "sentence,kor_sentence", "--label-column", "label",
                   "--base-url", server.base_url, "--out", str(tmp_path / "out.csv"), "--json",
                   db=tmp_path / "sep.db")
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        # every request asked for a choice of the three words, under the prompt of the text's language
        assert {tuple(choice_words(r)) for r in server.requests} == {STANCES}
        systems = {r["messages"][0]["content"].split("\n")[0] for r in server.requests}
        assert len(server.requests) == 48 and any("(in Korean)" in s for s in systems) and len(systems) == 2
    assert got["n"] == 48
    assert got["accuracy"] == realized(truth, 0.7)  # exactly: the share of texts the hash made right
    assert got["accuracy_ci95"][0] < got["accuracy"] < got["accuracy_ci95"][1]
    assert sum(sum(r.values()) for r in got["confusion"].values()) == 48
    # a wrong answer moves one label round the circle, so the confusion matrix says where each went
    assert got["confusion"]["positive"]["negative"] == got["confusion"]["neutral"]["positive"] == 0
    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written.columns) == ["text", "lang", "stance", "p_positive", "p_neutral", "p_negative", "label"]
    assert (written.stance == written.label).mean() == pytest.approx(got["accuracy"])
    # the probabilities come from the log-probs: e^-0.2 against e^-2.5 twice
    chosen = 1 / (1 + 2 * math.exp(-2.3))
    assert written[["p_positive", "p_neutral", "p_negative"]].max(axis=1).round(3).unique().tolist() == [round(chosen, 3)]


def test_accuracy_posneg_reads_the_larger_of_the_two_probabilities():
    """On the rows labelled positive or negative, a neutral answer still counts by which side leans more."""
    judged = [Judged("a", "en", {"positive": 0.3, "neutral": 0.6, "negative": 0.1}),   # gold +: right (0.3 > 0.1)
              Judged("b", "en", {"positive": 0.1, "neutral": 0.5, "negative": 0.4}),   # gold +: wrong
              Judged("c", "en", {"positive": 0.1, "neutral": 0.1, "negative": 0.8}),   # gold -: right
              Judged("d", "en", {"positive": 0.2, "neutral": 0.7, "negative": 0.1})]   # gold 0: not counted
    s = stance_scores(judged, ["positive", "positive", "negative", "neutral"])
    assert (s["accuracy"], s["accuracy_posneg"], s["n_posneg"]) == (0.5, 2 / 3, 3)
    assert s["confusion"]["positive"] == {"positive": 0, "neutral": 2, "negative": 0}
    from sklearn.metrics import f1_score

    assert s["macro_f1"] == pytest.approx(f1_score(["positive", "positive", "negative", "neutral"],
                                                   [j.stance for j in judged], average="macro", labels=list(STANCES)))
    assert wilson(0, 0) is None and wilson(5, 10) == [0.2366, 0.7634]


def test_choice_probabilities_renormalise_and_skip_shared_tokens():
    logprobs = {"content": [{"token": "neutral", "logprob": -0.5, "top_logprobs": [
        {"token": "neutral", "logprob": -0.5}, {"token": "ne", "logprob": -0.1},  # 'ne' begins two words: ignored
        {"token": " positive", "logprob": -1.5}]}]}
    p = choice_probabilities(logprobs, ["positive", "neutral", "negative"])
    assert sum(p) == pytest.approx(1) and p[1] / p[0] == pytest.approx(math.exp(1.0))
    assert p[2] == pytest.approx(p[0])  # a word no candidate begins gets the smallest listed probability
    assert choice_probabilities(None, ["a", "b", "c"]) is None
    assert AnswerShape.from_regex(AnswerShape.choice(*STANCES).regex()) == AnswerShape.choice(*STANCES)


def test_bad_files_get_one_sentence_and_exit_2(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    (tmp_path / "labels.csv").write_text("text,label\n좋은 소식,positive\n나쁜 소식,bearish\n")
    (tmp_path / "notes.pdf").write_text("x")
    cases = [
        ([str(PHRASEBANK), "--text-column", "title"], "no column 'title'"),
        ([str(PHRASEBANK), "--text-column", "sentence", "--label-column", "gold"], "no column 'gold'"),
        ([str(tmp_path / "labels.csv"), "--label-column", "label"], "'bearish'"),
        ([str(tmp_path / "empty.csv")], "has no rows"),
        ([str(tmp_path / "missing.csv")], "No file"),
        ([str(tmp_path / "notes.pdf")], "not .pdf"),
        ([str(PHRASEBANK), "--text-column", "sentence", "--lang", "fr"], "--lang must be ko or en"),
        ([str(PHRASEBANK), "--text-column", "sentence", "--examples", str(tmp_path / "empty.csv")], "has no rows"),
        ([str(PHRASEBANK), "--text-column", "text", "--examples", str(tmp_path / "labels.csv")], "no column 'text'"),
        ([str(PHRASEBANK), "--text-column", "sentence", "--examples", str(PHRASEBANK), "--examples-per-label", "0"],
         "--examples-per-label"),
    ]
    for args, says in cases:
        done = run("stance", *args, "--base-url", "http://127.0.0.1:9/v1", db=tmp_path / "sep.db")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert says in done.stderr and done.stderr.count("\n") <= 3, done.stderr


def test_judgements_are_cached_so_a_rerun_asks_nothing(tmp_path):
    rows = pd.read_csv(PHRASEBANK)
    truth = dict(zip(rows.sentence, rows.label))
    with FakeOpenAI(lambda kind, prompt: "-", stance=skilled(truth, 1.0)) as server:
        args = ("stance", str(PHRASEBANK), "--text-column", "sentence", "--label-column", "label",
                "--base-url", server.base_url, "--json")
        first = run(*args, db=tmp_path / "sep.db")
        asked = len(server.requests)
        again = run(*args, db=tmp_path / "sep.db")
        assert asked == 24 and len(server.requests) == asked, "the second run asked the server again"
    assert json.loads(first.stdout)["accuracy"] == json.loads(again.stdout)["accuracy"] == 1.0


def test_a_trained_stance_run_asks_with_the_prompt_it_learned_on(tmp_path):
    """`--policy RUN` of a `sep train stance` run sends RUN/prompts (no worked examples), not the packaged prompt."""
    import dataclasses

    from sep.prompting import write_prompt
    from sep.stances import stance_prompt

    run_dir = tmp_path / "stance"
    learned = dataclasses.replace(stance_prompt("en"), examples=(), system="Judge the sentence. One word.")
    write_prompt(learned, run_dir / "prompts" / "en" / "stance.toml")
    with FakeOpenAI(lambda kind, prompt: "-", stance=lambda text: "positive", model="stance") as server:
        done = run("stance", str(PHRASEBANK), "--text-column", "sentence", "--policy", str(run_dir),
                   "--base-url", server.base_url, "--json", db=tmp_path / "sep.db")
        assert done.returncode == 0, done.stderr
        sent = server.requests[0]["messages"]
    assert sent[0]["content"] == "Judge the sentence. One word." and len(sent) == 2
    assert server.requests[0]["model"] == "stance"


def test_one_story_wrapped_two_ways_is_one_judgement(tmp_path):
    """A retweet's "RT @user:", the cashtags a tweet leads with, a banner and links say nothing of the
    news: the judge reads the story without them, so two wrappings of it can't be judged apart. The
    server here keys on the wrapping (a retweet → negative), as the default model did."""
    story = "BROADCOM TO ACQUIRE VMWARE FOR APPROXIMATELY $61 BILLION IN CASH AND STOCK"
    texts = [f"RT @DeItaone: {story}", f"$VMW $AVGO - {story} https://t.co/x1", f"BREAKING NEWS: $AVGO {story}",
             "Broadcom slumps after results"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "tweets.csv", index=False)
    seen: list[str] = []

    def wrapped(text: str) -> str:
        seen.append(text)
        return "negative" if text.startswith("RT") or "slumps" in text else "positive"

    with FakeOpenAI(lambda kind, prompt: "-", stance=wrapped) as server:
        done = run("stance", str(tmp_path / "tweets.csv"), "--text-column", "text", "--base-url", server.base_url,
                   "--out", str(tmp_path / "out.csv"), db=tmp_path / "sep.db")
        assert done.returncode == 0, done.stderr
    assert set(seen) == {story, "Broadcom slumps after results"}
    written = pd.read_csv(tmp_path / "out.csv")
    assert written.text.tolist() == texts  # the output keeps each text as it was written
    assert written.stance.tolist() == ["positive", "positive", "positive", "negative"]


def sklearn_nearest(texts: list[str], labels: list[str], per_label: int) -> list[list[tuple[str, str]]]:
    """Each text's examples by scikit-learn's tf-idf (char_wb 2-4, sublinear tf): the `per_label`
    most similar other texts of each label, least similar first."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(texts)
    sims = (vectors @ vectors.T).toarray()
    out = []
    for i, text in enumerate(texts):
        order = np.argsort(-sims[i], kind="stable")
        picked = [j for s in STANCES for j in [j for j in order if labels[j] == s and texts[j] != text][:per_label]]
        out.append([(texts[j], labels[j]) for j in sorted(picked, key=lambda j: sims[i][j])])
    return out


def test_each_text_is_shown_its_nearest_labelled_texts_as_examples(tmp_path):
    """`--examples FILE`: every request carries, in place of the prompt's worked examples, the texts of
    that file most similar to the one judged (the same choice scikit-learn's tf-idf makes), with the
    prompt's answer words, and never the text itself."""
    rows = pd.read_csv(PHRASEBANK)
    texts, labels = [" ".join(t.split()) for t in rows.sentence], list(rows.label)
    expected = dict(zip(texts, sklearn_nearest(texts, labels, per_label=1)))
    with FakeOpenAI(lambda kind, prompt: "-", stance=skilled(dict(zip(texts, labels)), 1.0)) as server:
        done = run("stance", str(PHRASEBANK), "--text-column", "sentence", "--label-column", "label", "--examples",
                   str(PHRASEBANK), "--examples-per-label", "1", "--base-url", server.base_url, "--json",
                   db=tmp_path / "sep.db")
        assert done.returncode == 0, done.stderr
        assert len(server.requests) == len(texts)
        for request in server.requests:
            sent = request["messages"]
            text = sent[-1]["content"]
            shown = [(sent[k]["content"], sent[k + 1]["content"]) for k in range(1, len(sent) - 1, 2)]
            assert [m["role"] for m in sent[1:-1]] == ["user", "assistant"] * 3
            assert shown == expected[text] and text not in [t for t, _ in shown]
    assert json.loads(done.stdout)["accuracy"] == 1.0


def test_a_pool_sets_aside_the_calibration_fitted_without_it():
    from types import SimpleNamespace

    from sep.stances import ExamplePool, StanceJudge

    model = SimpleNamespace(name="qwen2.5-coder-1.5b", parallel=False)
    assert StanceJudge(model).bias("ko") is not None  # the shipped prompt's bias for the default model
    pool = ExamplePool(["매출이 늘었다", "주총을 연다", "적자가 났다"], list(STANCES))
    assert StanceJudge(model, examples=pool).bias("ko") is None
    assert pool.nearest("매출이 크게 늘었다", "ko")[-1] == ("매출이 늘었다", "positive")  # the most similar last
    assert pool.nearest("anything", "en") == ()  # no English texts in the pool: no examples


def test_the_api_takes_a_list_of_texts(tmp_path):
    import sep
    from sep.backends.mock import mock_llm

    result = sep.stance(["영업이익 증가로 실적 개선", "The company will hold its AGM in May."], llm=mock_llm(),
                        db=sep.open_memory(tmp_path / "sep.db"))
    assert [j.stance for j in result.judged] == ["positive", "neutral"]
    assert [j.lang for j in result.judged] == ["ko", "en"] and result.scores is None
    assert all(sum(j.probs.values()) == pytest.approx(1) for j in result.judged)


@pytest.mark.slow
def test_the_default_model_reads_clear_news_on_real_sentences(tmp_path):
    """The real default model, through llama.cpp, on six Financial PhraseBank rows whose direction is
    plain (profit up, loss, a neutral listing) in both languages: probabilities sum to one and
    the polar rows lean the gold way."""
    rows = pd.read_csv(PHRASEBANK)
    clear = rows[rows.sentence.str.contains("rose|increased|loss|fell|decreased|summary", case=False)].head(6)
    path = tmp_path / "clear.csv"
    clear.to_csv(path, index=False)
    done = run("stance", str(path), "--text-column", "sentence,kor_sentence", "--label-column", "label",
               "--out", str(tmp_path / "out.jsonl"), "--json", "--model", "qwen2.5-coder-1.5b", db=tmp_path / "sep.db")
    assert done.returncode == 0, done.stderr[-2000:]
    judged = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(judged) == 2 * len(clear)
    for j in judged:
        assert j["p_positive"] + j["p_neutral"] + j["p_negative"] == pytest.approx(1, abs=1e-3)
        if j["label"] != "neutral":
            assert (j["p_positive"] > j["p_negative"]) == (j["label"] == "positive"), j
