"""The de-quantized model folders and the transformers path for policies on a base given as a folder."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.prompts import PromptTemplate

from sep.backends import make_llm
from sep.backends.policy import prepare_hf_model
from sep.llm import AnswerShape, message_dicts, parse_answer, render_messages
from sep.models import GEMMA_TEMPLATE
from sep.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def hf_model_dir(test_cache):
    """The session's cache links the user's converted model; without one it converts it (about a minute)."""
    return prepare_hf_model(test_cache, name="gemma-270m")


def test_prepared_folder_carries_the_one_chat_template(hf_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_model_dir)
    assert tok.chat_template == GEMMA_TEMPLATE
    messages = [{"role": "user", "content": "삼성전자\n내일은?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == tok.bos_token + render_messages(GEMMA_TEMPLATE, message_dicts([HumanMessage("삼성전자\n내일은?")]))


def test_policy_backend_answers_a_label_with_confidence(hf_model_dir):
    """A model folder as the policy (no sep run, no GGUF) answers through transformers."""
    llm = make_llm(Settings(policy=hf_model_dir, threads=2))
    assert type(llm.chat).__name__ == "TransformersChatModel"
    template = PromptTemplate.from_template("{question}\n첫 줄에 상승 또는 하락만 쓰고 이유를 쓰세요.")
    message = llm.ask(template, {"question": "삼성전자 주가가 내일 오를까요?"}, shape=AnswerShape("상승", "하락"),
                      max_tokens=12)
    answer = parse_answer(message, "ko")
    assert answer.label in ("up", "down")  # scored between the two words, so always one of them
    assert 0.5 <= answer.confidence <= 1.0  # the chosen word is the likelier one
    assert llm.calls == 1 and llm.completion_tokens > 0
    # evidence first: it writes its evidence, then the label is scored after the marker
    shape = AnswerShape("상승", "하락", "판단:", "근거:", ("t1",))
    message = llm.ask(template, {"question": "삼성전자 주가가 내일 오를까요?"}, shape=shape, max_tokens=12)
    answer = parse_answer(message, "ko", "판단:")
    assert answer.label in ("up", "down") and "판단: " in str(message.content)
    assert 0.5 <= answer.confidence <= 1.0
