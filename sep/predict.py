"""Best-of-n prediction: sample N explanations from the policy, let the reward model pick one.

The prompt is the explain prompt without recalled reflections, the one the policies were trained
on (the `pairs.prompt`); only texts dated on or before D enter it (it is built from a
`DecisionWindow`). The answer is the label with the larger reward-weighted mass (a softmax over
the N rewards, summed per label), so its confidence, that mass's share, is a probability of the
answered label and never below 0.5; the explanation is the best-rewarded candidate of that label.
Without a reward model, the candidates' own P(up) are averaged.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from dataclasses import asdict, dataclass, field

from sep.agents import Agents
from sep.memory import AlsoWrite, PredictionRow, PredictionStore, now_iso
from sep.settings import Settings, default
from sep.window import DecisionWindow, label_word, up_probability

Scorer = Callable[[str, list[str]], list[float]]  # (prompt, responses) -> rewards


@dataclass
class Candidate:
    label: str | None  # None when unparsable or flagged by the quality gate
    explanation: str
    reward: float
    response: str
    flags: list[str] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)  # the items an evidence-first answer cited


@dataclass
class Forecast:
    window: DecisionWindow
    label: str | None
    explanation: str
    confidence: float
    candidates: list[Candidate]
    best: int
    prompt: str
    model: str
    scored_by: str
    data_end: str | None = None  # the latest last-training-day of the policy and reward runs used

    def as_json(self) -> dict:
        w = self.window
        return {"stock": w.stock, "date": w.date, "target_day": w.target_day, "actual": w.label,
                "label": self.label, "label_word": label_word(self.label, w.stock), "actual_word": w.label_word,
                "explanation": self.explanation, "confidence": self.confidence,
                "correct": self.label == w.label, "best": self.best, "scored_by": self.scored_by,
                "in_sample": bool(self.data_end and w.date <= self.data_end),
                "candidates": [{k: v for k, v in asdict(c).items() if k != "response"} for c in self.candidates]}


def answering_base(cfg: Settings) -> str | None:
    """The base model that writes the candidates: a policy run's base, else the embedded model; None for a server."""
    from sep.adapters import run_base
    from sep.models import DEFAULT_MODEL

    if cfg.base_url:
        return None
    if cfg.policy:
        return run_base(cfg.policy)
    return cfg.model or DEFAULT_MODEL


def reward_scorer(reward: Path, cfg: Settings) -> Scorer:
    """Score candidates with a `sep train reward` run, in the chat format of the base it was trained
    on; refused when that base is not the one answering. One torch model, so callers take turns."""
    from sep.adapters import run_base
    from sep.errors import BadInput
    from sep.train import load_reward

    trained_on, answering = run_base(reward), answering_base(cfg)
    if answering and trained_on != answering:
        raise BadInput(f"--reward {reward} was trained on {trained_on}, but {answering} writes the candidates; "
                       f"train the reward model with --base-model {answering}.")
    rm = load_reward(reward, cfg, cfg.threads)
    lock = threading.Lock()  # batch jobs score from many worker threads

    def score(prompt: str, responses: list[str]) -> list[float]:
        with lock:
            return rm.scores(prompt, responses)

    return score


def pick(rewards: list[float], labels: list[str | None]) -> tuple[str | None, int, float]:
    """(answered label, index of its best candidate, probability of that label).

    The label whose candidates carry the larger softmax mass of the rewards wins, so the
    probability is at least 0.5; unparsable candidates count for neither label.
    """
    top = max(rewards)
    weights = [math.exp(r - top) for r in rewards]
    mass = {lab: sum(w for w, x in zip(weights, labels) if x == lab) for lab in ("up", "down")}
    if not mass["up"] + mass["down"]:
        return None, max(range(len(rewards)), key=lambda i: (rewards[i], -i)), 0.5
    label = "up" if mass["up"] > mass["down"] else "down" if mass["down"] > mass["up"] else \
        labels[max((i for i, x in enumerate(labels) if x), key=lambda i: (rewards[i], -i))]
    best = max((i for i, x in enumerate(labels) if x == label), key=lambda i: (rewards[i], -i))
    return label, best, mass[label] / (mass["up"] + mass["down"])


def label_rewards(labels: list[str | None], confidences: list[float | None]) -> list[float]:
    """Each candidate's own probability of the label it answered (0 for an unparsable one)."""
    return [c if (x and c is not None) else 0.0 for x, c in zip(labels, confidences)]


def vote(labels: list[str | None], confidences: list[float | None]) -> tuple[str | None, int, float]:
    """(answered label, index of its best candidate, P(that label)) without a reward model.

    P(up) is the candidates' mean (an unparsable one counts 0.5). The label is the side it favours
    among the labels the candidates answered: a derived answer's confidence comes from its evidence
    and may be under 0.5 (a tie the model broke), so answers that all say up can average P(up) < 0.5,
    and the forecast must still be an answer some candidate argued (its P stays the mean, as a single
    answer's does).
    """
    rewards = label_rewards(labels, confidences)
    answered = {x for x in labels if x}
    if not answered:
        return None, 0, 0.5
    mean_up = sum(up_probability(x, c, 0.5) for x, c in zip(labels, confidences)) / len(labels)
    if len(answered) == 1:
        label = answered.pop()
    else:
        label = "up" if mean_up > 0.5 else "down" if mean_up < 0.5 else pick(rewards, labels)[0]
    best = max((i for i, x in enumerate(labels) if x == label), key=lambda i: (rewards[i], -i))
    return label, best, mean_up if label == "up" else 1.0 - mean_up


def best_of_n(agents: Agents, window: DecisionWindow, n: int, scorer: Scorer | None, *, temperature: float = default("temperature"),
              seed: int = default("seed"), data_end: str | None = None) -> Forecast:
    """N sampled answers to the plain explain prompt (no recalled lessons), one chosen; see the module doc."""
    summaries = agents.summaries(window)
    variables = agents.explain_variables(window, summaries, [])
    prompt = agents.prompts["explain"].render(**variables)
    answers = [agents.explain(variables, temperature=temperature if n > 1 else 0.0, seed=seed + i) for i in range(n)]
    labels = [None if a.flags else a.label for a in answers]  # a flagged answer is unparsable
    if scorer is not None:
        rewards = scorer(prompt, [a.response for a in answers])
        scored_by = "reward model"
        label, best, confidence = pick(rewards, labels)
    else:  # the policy's own probability of the label it wrote, averaged as P(up)
        confidences = [a.confidence for a in answers]
        rewards = label_rewards(labels, confidences)
        scored_by = "label probability"
        label, best, confidence = vote(labels, confidences)
    candidates = [Candidate(x, a.explanation, float(r), a.response, a.flags, a.evidence)
                  for a, x, r in zip(answers, labels, rewards)]
    ends = [d for d in (agents.data_end, data_end) if d]
    return Forecast(window, label, answers[best].explanation, float(confidence), candidates, best, prompt,
                    agents.model_name, scored_by, max(ends) if ends else None)


def store(db, forecast: Forecast, also: AlsoWrite | None = None) -> None:
    """One `predictions` row (method best-of-n, trial 0) per (stock, date, model); a rerun replaces it.
    `also` is written in the same transaction (a batch's record that the day is done)."""
    w, chosen = forecast.window, forecast.candidates[forecast.best]
    candidates = json.dumps([{"label": c.label, "explanation": c.explanation, "reward": c.reward, "flags": c.flags,
                              "evidence": c.evidence} for c in forecast.candidates], ensure_ascii=False)
    PredictionStore(db).save([PredictionRow(
        w.stock, w.date, 0, w.target_day, w.label, forecast.label, forecast.explanation, forecast.confidence,
        forecast.label == w.label, chosen.response, forecast.prompt, forecast.model, now_iso(), method="best-of-n",
        candidates=candidates, data_end=forecast.data_end,
        evidence=json.dumps(chosen.evidence, ensure_ascii=False) if chosen.evidence else None)], also=also)
