"""Rewards from the market (RLMF): what a forecast earned once the next close was known.

Pure functions of an answer and a return, so each is tested alone (tests/test_train.py).
"""

from __future__ import annotations

import re
import statistics

from sep.llm import parse_answer


def market_reward(label: str | None, ret: float) -> float:
    """+|r| when the label's direction was right, -|r| when wrong (long on up, short on down).

    FinRLlama had the short side's sign reversed; here a short (down) earns -r, which is +|r|
    exactly when the price fell. An unparsable answer counts as wrong.
    """
    if label == "up":
        return ret
    if label == "down":
        return -ret
    return -abs(ret)


_SCORE_LINE = re.compile(r"^\W*(?:점수|score)\s*[:：=]\s*([-+−]?\d+(?:\.\d+)?)\s*(?:점|/\s*10)?\W*$",
                         re.IGNORECASE | re.MULTILINE)
SIGNAL_INSTRUCTION = {
    "ko": "마지막 줄에는 '점수: N' 형식으로 -10(강한 하락)부터 10(강한 상승)까지의 정수 점수 하나만 쓰세요.",
    "en": "On the last line write only 'Score: N', an integer from -10 (strong fall) to 10 (strong rise).",
}


def parse_signal(text: str) -> float | None:
    """FinRLlama's signal score, read only from a dedicated "점수: N" / "Score: N" line in [-10, 10].

    Numbers elsewhere (dates like 2022-05-12, prices, percentages) are never a score.
    """
    found = _SCORE_LINE.findall(text.replace("−", "-"))
    if not found:
        return None
    value = float(found[-1])
    return value if -10 <= value <= 10 else None


def with_signal_instruction(messages: list[dict]) -> list[dict]:
    """The chat with the score instruction appended to its last user turn."""
    lang = "ko" if any(re.search(r"[가-힣]", m["content"]) for m in messages) else "en"
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [{**m, "content": m["content"].rstrip() + "\n" + SIGNAL_INSTRUCTION[lang]} if i == last else m
            for i, m in enumerate(messages)]


def mixed_reward(market: float, model: float, market_scale: float, model_scale: float, model_weight: float) -> float:
    """`--reward-kind both`: each part in its own typical size, so a 1% return and a reward-model logit of 5 both count.

    market_scale is the mean |return| of the training days; model_scale the spread of the reward
    model's scores on the training responses.
    """
    return market / (market_scale or 1.0) + model_weight * model / (model_scale or 1.0)


def signal_reward(score: float | None, ret: float, threshold: float) -> float:
    """Position sign(score) when |score| >= threshold, else flat (0); unparsable counts as wrong."""
    if score is None:
        return -abs(ret)
    if abs(score) < threshold:
        return 0.0
    return ret if score > 0 else -ret


def rlmf_rewards(texts: list[str], ret: list[float] | None, kind: str, model_scores: list[float] | None = None,
                 seen: list[float] | None = None, *, market_scale: float = 1.0, model_weight: float = 1.0,
                 signal_threshold: float | None = None, flagged: list[bool] | None = None) -> list[float]:
    """PPO's and GRPO's reward per completion (RLMF), `kind` being `--reward-kind`: `market` (the label line
    read as inference reads it, `market_reward`; or the score line, `signal_reward`, when `signal_threshold`
    is set), `model` (the reward model's `model_scores`), or `both` (`mixed_reward`; the model's scale
    is the spread of every score so far, kept in `seen` across calls). A completion the quality gate
    `flagged` earns the market's wrong-answer reward, as inference would withhold it."""
    market = [0.0] * len(texts)
    if kind != "model":
        market = [-abs(ret[i]) if flagged and flagged[i] else
                  signal_reward(parse_signal(t), ret[i], signal_threshold) if signal_threshold is not None
                  else market_reward(parse_answer(t).label, ret[i]) for i, t in enumerate(texts)]
    if kind == "market":
        return market
    if kind == "model":
        return list(model_scores)
    seen = seen if seen is not None else []
    seen.extend(model_scores)
    model_scale = statistics.pstdev(seen) if len(seen) > 1 else 0.0
    return [mixed_reward(m, x, market_scale, model_scale or 1.0, model_weight) for m, x in zip(market, model_scores)]
