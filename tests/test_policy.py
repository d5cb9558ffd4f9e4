"""The de-quantized model folder and the transformers path for policies on a base given as a folder."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.prompts import PromptTemplate

from sep.backends import make_llm
from sep.llm import message_dicts, parse_answer, render_messages
from sep.shapes import AnswerShape
from sep.models import GEMMA_TEMPLATE
from sep.settings import Settings

pytestmark = pytest.mark.slow


def test_prepared_folder_carries_the_one_chat_template(qwen_hf, test_cache):
    """The default model de-quantized for training renders chats exactly as the embedded model does."""
    from transformers import AutoTokenizer

    from sep.models import DEFAULT_MODEL, local_model

    template = local_model(test_cache, DEFAULT_MODEL).chat_template
    tok = AutoTokenizer.from_pretrained(qwen_hf)
    assert tok.chat_template == template
    messages = [{"role": "user", "content": "삼성전자\n내일은?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render_messages(template, message_dicts([HumanMessage("삼성전자\n내일은?")]))
    assert render_messages(GEMMA_TEMPLATE, messages).startswith("<start_of_turn>user\n삼성전자")  # llama.cpp adds BOS


def test_policy_backend_answers_a_label_with_confidence(tiny):
    """A model folder as the policy (no sep run, no GGUF; the tiny Qwen2's: its words mean nothing,
    the path is what is tested) answers through transformers."""
    llm = make_llm(Settings(policy=tiny[0], threads=2))
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
