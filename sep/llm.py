"""What every model shares: chat templates, the answer parser, and the `LLM` facade the agents ask.

The backends that make an `LLM` (embedded llama.cpp, an OpenAI-compatible server, a trained
policy, the scripted mock, and plugins) live in `sep.backends`. They all return `AIMessage`s
with OpenAI-shaped `response_metadata["logprobs"]`, so one parser turns any of them into an
`Answer` with a confidence from the label token's log-probabilities.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import BasePromptTemplate

from sep.models import ModelError
from sep.shapes import AnswerShape
from sep.window import LABEL_MARKERS, LABEL_WORDS
from sep.settings import default

_ALIASES = {"상승": "up", "하락": "down", "positive": "up", "negative": "down", "up": "up", "down": "down",
            "rise": "up", "fall": "down"}


class LLMUnavailable(RuntimeError):
    """The model can't be reached or run; the CLI prints this and exits non-zero."""


# ---------------------------------------------------------------- chat templates


_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def message_dicts(messages: list[BaseMessage]) -> list[dict]:
    """langchain messages as the OpenAI/transformers role dicts chat templates read."""
    return [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """A chat template compiled once (every generation renders one; Qwen's is long)."""
    import json

    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_messages(template: str, messages: list[dict], add_generation_prompt: bool = True,
                    bos_token: str = "", eos_token: str = "") -> str:
    """A chat rendered by a jinja chat template, with the settings transformers uses, so the
    embedded model, `apply_chat_template` and vLLM see the same text. llama.cpp adds BOS itself."""
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                      bos_token=bos_token, eos_token=eos_token)


def chat_result(text: str, logprobs: Any, model_name: str, tokens_in: int, tokens_out: int,
                 timings: dict | None = None, cached: int = 0) -> ChatResult:
    """What the local backends return: OpenAI-shaped logprobs and usage, like a server's answer
    (`cached`: prompt tokens served from the prompt cache, LangChain's `cache_read`)."""
    message = AIMessage(
        content=text.strip(),
        response_metadata={"logprobs": logprobs, "model_name": model_name, "timings": timings},
        usage_metadata={"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out,
                        "input_token_details": {"cache_read": cached}},
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


_ANSWER = "\x00sep-answer\x00"


def turn_end_of(template: str) -> str:
    """The text that closes a model turn under this chat template: `<|im_end|>` for ChatML,
    `<end_of_turn>` for Gemma. Read off the template itself (render an answer, see what follows
    it), so no model's marker is written into sep's code."""
    rendered = render_messages(template, [{"role": "user", "content": "q"}, {"role": "assistant", "content": _ANSWER}],
                               add_generation_prompt=False)
    tail = rendered.split(_ANSWER, 1)[-1].lstrip(" ")
    found = re.match(r"<\|[^|>]+\|>|<[^<>\s]+>|</s>", tail)
    if not found:
        raise ModelError("The chat template closes a model turn with no special token; sep can't tell where an "
                         "answer ends (give a base whose tokenizer carries a chat template with an end-of-turn token).")
    return found.group(0)


@dataclass(frozen=True)
class ChatFormat:
    """How a base model's chats look: its template and the token that ends a model turn.

    Training, PPO's stop and missing-EOS check, the reward model's read position and best-of-n
    scoring all use the same `turn_end`, so a response is scored where it was trained to end."""

    template: str
    turn_end: str

    @classmethod
    def of(cls, template: str) -> "ChatFormat":
        return cls(template, turn_end_of(template))

    def prompt(self, prompt: str | list[dict]) -> str:
        """A prompt rendered for generation: plain text becomes one user turn; TRL conversational
        messages, or a stored prediction's chat (JSON, see `Prompt.render`), are rendered as they are."""
        return render_messages(self.template, as_messages(prompt))

    def response(self, text: str | list[dict]) -> str:
        """An answer as it ends in training and scoring: closed by the turn end."""
        text = content_text(text).strip()
        return text if text.endswith(self.turn_end) else text + self.turn_end

    def strip(self, text: str) -> str:
        return text.split(self.turn_end)[0]


def as_messages(prompt: str | list[dict]) -> list[dict]:
    """Any prompt as chat messages: TRL conversational lists, a stored chat (JSON), or plain text (one user turn)."""
    if isinstance(prompt, str) and prompt.startswith("[{"):
        try:
            prompt = json.loads(prompt)
        except ValueError:
            pass
    if isinstance(prompt, list):
        return [{"role": m.get("role", "user"), "content": m["content"]} for m in prompt]
    return [{"role": "user", "content": prompt}]


def content_text(value: str | list[dict]) -> str:
    if isinstance(value, list):  # conversational completion: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in value)
    return value


# ---------------------------------------------------------------- parsing


@dataclass
class Answer:
    """One explain trial: label up/down (None if unparsable, counted wrong), why, how sure."""

    label: str | None
    explanation: str
    confidence: float | None
    response: str
    flags: list[str] = field(default_factory=list)  # sep.quality's findings; any flag makes it unparsable
    evidence: list[dict] = field(default_factory=list)  # evidence-first answers: {"item": "t57", "direction", "note"}
    attempts: int = 1  # asks it took: a forecast the gate flagged is asked again (Agents.forecast)
    asked_flags: list[list[str]] = field(default_factory=list)  # a re-asked forecast: each ask's flags, in order


def parse_label(line: str) -> str | None:
    """The label named on a line, or None when it names none or both."""
    words = re.findall(r"[가-힣]+|[A-Za-z]+", line.lower())
    found = {_ALIASES[w] for w in words if w in _ALIASES}
    return found.pop() if len(found) == 1 else None


_EVIDENCE = re.compile(r"^[-*•]?\s*\[\s*[tT]?\s*(\d+)\s*\]\s*(\(?[+＋−–-]\)?|\(?0\)?(?=\s)|상승|하락|긍정|부정|중립|"
                       r"positive|negative|neutral)?\s*[:：]?\s*(.*)$", re.I)
_DIRECTION = {"+": "+", "＋": "+", "(+)": "+", "상승": "+", "긍정": "+", "positive": "+",
              "-": "-", "−": "-", "–": "-", "(-)": "-", "(−)": "-", "하락": "-", "부정": "-", "negative": "-",
              "0": "0", "(0)": "0", "중립": "0", "neutral": "0"}
_REASON_HEAD = re.compile(r"^(?:이유|근거|why|reason|reasons|evidence)\s*[:：]\s*", re.I)


def _marker_line(line: str, marker: str) -> str | None:
    """The rest of `line` when it opens with the label marker (판단:, **Decision:**), else None."""
    bare = line.strip("*# ").replace("：", ":")
    head = marker.rstrip(":").lower()
    if bare.lower().startswith(head):
        rest = bare[len(head):].lstrip(" *")
        if rest.startswith(":"):
            return rest[1:].strip(" *")
    return None


def parse_answer(message: AIMessage | str, lang: str = "ko", label_after: str = "") -> Answer:
    """The label and the explanation, never raising.

    Label first (the default of old): the first non-empty line holds the label. Evidence first
    (`label_after`, e.g. "판단:"): cited items `[t57] +/- why` come first, then the marker line with
    the label, then the reasons; an answer that put its label first is still read."""
    text = message if isinstance(message, str) else str(message.content)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    meta = {} if isinstance(message, str) else message.response_metadata
    if not label_after and not (lines and parse_label(lines[0].strip("*#:. "))):
        # a stored answer read without its prompt (training pairs): the packaged prompts' markers
        label_after = next((m for m in LABEL_MARKERS.values() if any(_marker_line(ln, m) is not None for ln in lines)), "")
    if label_after:
        at = next((i for i, ln in enumerate(lines) if _marker_line(ln, label_after) is not None), None)
        if at is not None:
            rest = _marker_line(lines[at], label_after)
            label = parse_label(rest) if rest else (parse_label(lines[at + 1]) if at + 1 < len(lines) else None)
            after = lines[at + 1 + (0 if rest else 1):]
            explanation = "\n".join(_REASON_HEAD.sub("", ln) for ln in after).strip()
            evidence = []
            for ln in lines[:at]:
                found = _EVIDENCE.match(_REASON_HEAD.sub("", ln))
                if found:
                    sign = (found.group(2) or "").lower()
                    evidence.append({"item": f"t{found.group(1)}", "direction": _DIRECTION.get(sign),
                                     "note": found.group(3).strip()})
            confidence = label_confidence(meta.get("logprobs"), label, lang, label_after) if label else None
            return Answer(label, explanation, confidence, text.strip(), evidence=evidence)
    label = parse_label(lines[0].strip("*#:. ")) if lines else None
    explanation = "\n".join(lines[1:] if label else lines).strip()
    confidence = label_confidence(meta.get("logprobs"), label, lang) if label else None
    return Answer(label, explanation, confidence, text.strip())


def label_position(content: list[dict], label_after: str = "") -> int:
    """Which generated token holds the label: the first non-blank one right after `label_after`
    (the first non-blank token when the label comes first). A backend that returns only the
    label call's log-probs (embedded, policy, mock) has it at 0."""
    seen = ""
    for i, entry in enumerate(content):
        token = entry.get("token", "")
        if token.strip() and seen.replace("：", ":").rstrip(" *").endswith(label_after):
            return i
        seen += token
    return 0


def choice_probabilities(logprobs: Any, words: Sequence[str], label_after: str = "") -> list[float] | None:
    """P(each word) at the answer's token, from its top log-probs, renormalised over the words.

    A candidate token counts for a word when the word starts with it and no other word does (a
    token both begin with says nothing). A word none of the candidates begins is given the
    smallest listed probability. None when the log-probs are missing or name no word."""
    try:
        content = logprobs["content"]
        first = content[label_position(content, label_after)]
    except (TypeError, KeyError, IndexError):
        return None
    candidates = [(c["token"].strip().lower(), c["logprob"]) for c in first.get("top_logprobs") or []]
    candidates.append((first["token"].strip().lower(), first["logprob"]))
    lowered = [w.lower() for w in words]
    best: list[float | None] = []
    for word in lowered:
        lps = [lp for tok, lp in candidates if tok and word.startswith(tok)
               and not any(other.startswith(tok) for other in lowered if other != word)]
        best.append(max(lps) if lps else None)
    if all(b is None for b in best):
        return None
    floor = min(lp for _, lp in candidates)
    values = [b if b is not None else floor for b in best]
    top = max(values)
    exp = [math.exp(v - top) for v in values]
    return [e / sum(exp) for e in exp]


def answered_probabilities(message: AIMessage, words: Sequence[str]) -> list[float]:
    """P(each word) of an answer that chose one of `words`: read from its log-probs; from a server that
    gives none, the word it said, with certainty; when it said none of them, uniform."""
    probs = choice_probabilities(message.response_metadata.get("logprobs"), words)
    if probs is None:
        said = str(message.content).strip().lower()
        probs = [1.0 if said.startswith(w.lower()) else 0.0 for w in words]
    return probs if any(probs) else [1 / len(words)] * len(words)


def label_confidence(logprobs: Any, label: str, lang: str, label_after: str = "") -> float | None:
    """P(chosen label) against the other, from the label token's top log-probs (see `label_position`).

    If the other label's first token is not among the top candidates, its probability is
    taken as the smallest listed one (so the confidence errs low, never high).
    """
    try:
        content = logprobs["content"]
        first = content[label_position(content, label_after)]
    except (TypeError, KeyError, IndexError):
        return None
    words = LABEL_WORDS[lang]
    chosen_word, other_word = words[label], words["down" if label == "up" else "up"]
    candidates = [(c["token"].strip(), c["logprob"]) for c in first.get("top_logprobs") or []]
    candidates.append((first["token"].strip(), first["logprob"]))

    def best(word: str) -> float | None:
        lps = [lp for tok, lp in candidates if tok and word.lower().startswith(tok.lower())]
        return max(lps) if lps else None

    lp_chosen, lp_other = best(chosen_word), best(other_word)
    if lp_chosen is None:
        return None
    if lp_other is None:
        lp_other = min(lp for _, lp in candidates)
    return 1.0 / (1.0 + math.exp(lp_other - lp_chosen))


# ---------------------------------------------------------------- the facade the agents use


@dataclass
class LLM:
    """A chat model plus how to ask it for a constrained answer, with call/token counters."""

    name: str
    chat: BaseChatModel
    answer_binding: Callable[["AnswerShape"], dict]  # the answer's shape -> kwargs for .bind()
    retries: int = default("retries")
    data_end: str | None = None  # a trained policy's last training day (see `run_data_end`)
    context: int | None = None  # tokens the model can read and write; None: unknown (no budget check)
    count_tokens: Callable[[list[dict]], int] | None = None  # chat messages -> tokens, by the model's tokenizer
    weights: tuple[str, ...] = ()  # the files that make this model (GGUF, adapters): a ledger entry hashes them
    parallel: bool = False  # takes many requests at once (a server): decisions run `concurrency` at a time
    calls: int = 0
    prompt_tokens: int = 0
    prompt_cached: int = 0  # of prompt_tokens, served from a prompt cache (llama.cpp's, vLLM's prefix cache)
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # batch jobs ask from many threads

    def prompt_tokens_of(self, template: BasePromptTemplate, variables: dict) -> int | None:
        """How many tokens this prompt is for this model; None when the model can't say."""
        if self.count_tokens is None:
            return None
        return self.count_tokens(message_dicts(template.format_messages(**variables)))

    def ask(self, template: BasePromptTemplate, variables: dict, *, shape: AnswerShape | None = None,
            max_tokens: int = 200, temperature: float | None = None, stop: list[str] | None = None,
            seed: int | None = None, agent: str | None = None) -> AIMessage:
        """prompt → model; retried with exponential backoff on connection errors and timeouts.

        `agent` (summarize, explain, reflect, judge) travels as run metadata (`sep_agent`): a
        scripted model answers by it, a server never sees it."""
        from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

        kwargs: dict[str, Any] = {"max_tokens": max_tokens}
        if stop:
            kwargs["stop"] = stop
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        if shape:  # the label constrained: on the first line, or after the cited evidence and 판단:
            kwargs.update(self.answer_binding(shape))
        chain = template | self.chat.bind(**kwargs)

        @retry(stop=stop_after_attempt(self.retries), wait=wait_exponential(multiplier=0.5, max=20),
               retry=retry_if_exception(_is_transient), reraise=True)
        def call() -> AIMessage:
            return chain.invoke(variables, config={"metadata": {"sep_agent": agent}} if agent else None)

        try:
            message = call()
        except Exception as exc:
            if _is_transient(exc) or isinstance(exc, LLMUnavailable):
                raise LLMUnavailable(f"The model at {self.name} did not answer after {self.retries} attempts: "
                                     f"{type(exc).__name__}: {exc}") from None
            raise
        usage = message.usage_metadata or {}
        with self._lock:
            self.calls += 1
            self.prompt_tokens += usage.get("input_tokens", 0)
            self.prompt_cached += (usage.get("input_token_details") or {}).get("cache_read", 0) or 0
            self.completion_tokens += usage.get("output_tokens", 0)
        return message


def _is_transient(exc: BaseException) -> bool:
    try:
        import openai
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                            openai.RateLimitError))
