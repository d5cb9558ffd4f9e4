"""The mock backend: scripted answers in-process, so agents, batches, best-of-n and the judge run
with no model and no server. The agent that asks is told by `LLM.ask(agent=...)`; the mock
never reads the prompts to guess it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from sep.backends.registry import register_backend
from sep.llm import LLM, chat_result, message_dicts
from sep.shapes import LessonShape, constrained_label
from sep.settings import Settings


Script = Callable[[str, str], str]  # (agent: summarize | explain | reflect | judge, last user message) -> reply


AGENTS = ("summarize", "explain", "reflect", "judge", "stance")


def default_script(agent: str, prompt: str) -> str:
    """What the mock answers unless told otherwise: cite the first texts, explain with the first
    summary's words, a short lesson, middling judge scores. Deterministic, so tests can rely on it."""
    if agent == "summarize":
        found = re.findall(r"^\[(\d+)\] (.+)$", prompt, flags=re.M)[:3]
        return "\n".join(f"- {title} [{n}]" for n, title in found) or "- (정보 없음)"
    if agent == "reflect":
        return "요약의 가장 큰 소식보다 시장 전체의 흐름을 먼저 봤어야 했다."
    if agent == "judge":
        return json.dumps({"relevance": 4, "clarity": 4, "consistency": 4})
    if agent == "stance":  # a word-list judge: enough to run the stance step without a model
        low = prompt.lower()
        good = ("상승", "증가", "호재", "수주", "rise", "gain", "growth", "record", "beat")
        bad = ("하락", "감소", "악재", "손실", "적자", "fall", "loss", "cut", "decline", "낮아")
        return "positive" if any(w in low for w in good) else "negative" if any(w in low for w in bad) else "neutral"
    items = re.findall(r"^\[(t\d+)\] (?:\([+0-]\) )?(.+)$", prompt, flags=re.M)
    if items:  # an evidence-first prompt shows its items with text ids: cite the first
        n, item = items[0]
        words = " ".join(item.split()[:3])
        return f"근거:\n[{n}] + {words}\n판단: 상승\n이유: {words} 소식이 투자 심리를 바꿔 다음 거래일 주가를 움직일 것이다."
    line = next((ln for ln in prompt.splitlines() if ln.startswith("[20")), "")
    words = re.sub(r"\s*\[[^\]]*\]", "", re.sub(r"^\[[\d-]+\]\s*-?\s*", "", line)).split()[:6]
    return f"상승\n{' '.join(words) or '새 소식'} 소식이 주가를 움직일 것이다."


P_LABEL = 0.6  # the probability a scripted answer gives its label (what the confidence then reads)


class MockChatModel(BaseChatModel):
    """Scripted answers in-process: agents, batches, best-of-n and the judge run without a model or HTTP.

    `script(agent, prompt)` returns the reply; with an `answer_shape` its label is forced to one
    of them (the first when the script names neither), with probability `p_label`.
    """

    script: Any = None  # Script | None: default_script
    p_label: float = P_LABEL
    calls: list[dict] = []

    @property
    def _llm_type(self) -> str:
        return "sep-mock"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        chat = message_dicts(messages)
        agent = (run_manager.metadata if run_manager else {}).get("sep_agent") or "explain"
        text = (self.script or default_script)(agent, chat[-1]["content"])
        self.calls.append({"agent": agent, "messages": chat,
                           **{k: v for k, v in kwargs.items() if k != "answer_shape"}})
        logprobs = None
        shape = kwargs.get("answer_shape")
        if isinstance(shape, LessonShape):  # the script's lesson in the reflection's three lines
            parsed = shape.parse(text)
            if parsed["misled"] is None:
                misled = (shape.cited or ("t0",))[0]
                lesson = " ".join(text.split())
                if shape.kinds and lesson not in shape.kinds:  # a kind of news: the script's, or the first
                    lesson = shape.kinds[0]
                text = f"{shape.markers[0]} [{misled}] {shape.reasons[0]}\n{shape.markers[1]} {shape.none}\n{shape.markers[2]} {lesson}"
            return chat_result(text, None, "mock", sum(len(m["content"]) for m in chat) // 2, len(text) // 2)
        words, after = (shape.words, shape.after) if shape else (None, "")
        if shape and shape.choices:  # one word of a few (a stance): the script's, or the first
            label = text.strip() if text.strip() in words else words[0]
            rest = (1 - self.p_label) / (len(words) - 1)
            logprobs = {"content": [{"token": label, "logprob": math.log(self.p_label), "top_logprobs": [
                {"token": w, "logprob": math.log(self.p_label if w == label else rest)} for w in words]}]}
            return chat_result(label, logprobs, "mock", sum(len(m["content"]) for m in chat) // 2, 1)
        if words and after:  # evidence first: the label after the marker line, written if the script didn't
            lines = text.split("\n")
            if shape.signs:  # derived, as a grammar holds it: each cited id with its judged direction (and words)
                signs, quotes = dict(shape.signs), dict(reversed(shape.quotes))
                lines = [re.sub(r"^\[(t\d+)\] [+0-] (.*)$", lambda m: f"[{m.group(1)}] {signs.get(m.group(1), '0')} "
                                f"{quotes.get(m.group(1), m.group(2))}", ln) for ln in lines]
            at = next((i for i, ln in enumerate(lines) if ln.startswith(after)), None)
            said = lines[at][len(after):].strip() if at is not None else ""
            label = shape.fixed_label("\n".join(lines[:at])) or (said if said in words else words[0])
            if at is None:
                lines.append(f"{after} {label}")
            else:
                lines[at] = f"{after} {label}"
            text = "\n".join(lines)
        elif words:
            first, _, rest = text.partition("\n")
            label = first.strip() if first.strip() in words else words[0]
            text = f"{label}\n{rest if first.strip() in words else text}"
        if words:
            other = words[1] if label == words[0] else words[0]
            logprobs = {"content": [{"token": label, "logprob": math.log(self.p_label), "top_logprobs": [
                {"token": label, "logprob": math.log(self.p_label)},
                {"token": other, "logprob": math.log(1 - self.p_label)}]}]}
        tokens_in = sum(len(m["content"]) for m in chat) // 2
        return chat_result(text, logprobs, "mock", tokens_in, len(text) // 2)


def mock_llm(script: Script | None = None, p_label: float = P_LABEL) -> "LLM":
    """An LLM whose answers come from `script(agent, prompt)` (default: `default_script`)."""
    chat = MockChatModel(script=script, p_label=p_label, calls=[])
    return LLM("mock", chat, constrained_label, retries=1)


@register_backend("mock")
def _mock_backend(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> "LLM":
    return mock_llm()
