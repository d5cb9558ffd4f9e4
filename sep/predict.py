"""Best-of-n prediction: sample N explanations from the policy, let the reward model pick one.

The prompt is the explain prompt without recalled reflections, the one the policies were trained
on (the `pairs.prompt`); only texts dated on or before D enter it (it is built from a
`DecisionWindow`). Confidence is the reward-weighted probability of the chosen label: a softmax
over the N rewards, summed over the candidates that share the chosen label. Without a reward
model, candidates are ranked by the policy's own label probability.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from dataclasses import asdict, dataclass

from sep.agents import Agents
from sep.memory import now_iso, transaction
from sep.settings import Settings
from sep.window import DecisionWindow

Scorer = Callable[[str, list[str]], list[float]]  # (prompt, responses) -> rewards


@dataclass
class Candidate:
    label: str | None
    explanation: str
    reward: float
    response: str


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

    def as_json(self) -> dict:
        w = self.window
        return {"stock": w.stock, "date": w.date, "target_day": w.target_day, "actual": w.label,
                "label": self.label, "explanation": self.explanation, "confidence": self.confidence,
                "correct": self.label == w.label, "best": self.best, "scored_by": self.scored_by,
                "candidates": [{k: v for k, v in asdict(c).items() if k != "response"} for c in self.candidates]}


def reward_scorer(reward: Path, cfg: Settings) -> Scorer:
    """Score candidates with a `sep train reward` run; one torch model, so callers take turns."""
    from sep.train import base_model_dir, load_reward_model, reward_scores

    model, tok = load_reward_model(reward, base_model_dir(cfg), cfg.threads)
    lock = threading.Lock()  # batch jobs score from many worker threads

    def score(prompt: str, responses: list[str]) -> list[float]:
        with lock:
            return reward_scores(model, tok, prompt, responses)

    return score


def pick(rewards: list[float], labels: list[str | None]) -> tuple[int, float]:
    """(index of the highest reward, reward-weighted probability of its label)."""
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    top = max(rewards)
    weights = [math.exp(r - top) for r in rewards]
    same = sum(w for w, lab in zip(weights, labels) if lab == labels[best])
    return best, same / sum(weights)


def best_of_n(agents: Agents, window: DecisionWindow, n: int, scorer: Scorer | None, *, temperature: float = 0.8,
              seed: int = 0) -> Forecast:
    summaries = agents.summaries(window)
    variables = agents.explain_variables(window, summaries, [])
    prompt = agents.prompts["explain"].render(**variables)
    answers = [agents.explain(variables, temperature=temperature if n > 1 else 0.0, seed=seed + i) for i in range(n)]
    if scorer is not None:
        rewards = scorer(prompt, [a.response for a in answers])
        scored_by = "reward model"
    else:  # the policy's own probability of the label it wrote (unparsable: 0)
        rewards = [a.confidence if (a.label and a.confidence is not None) else 0.0 for a in answers]
        scored_by = "label probability"
    candidates = [Candidate(a.label, a.explanation, float(r), a.response) for a, r in zip(answers, rewards)]
    best, confidence = pick(rewards, [a.label for a in answers])
    if scorer is None:
        confidence = answers[best].confidence if answers[best].confidence is not None else 0.5
    chosen = answers[best]
    return Forecast(window, chosen.label, chosen.explanation, float(confidence), candidates, best, prompt,
                    agents.model_name, scored_by)


def store(db, forecast: Forecast) -> None:
    """One `predictions` row (method best-of-n, trial 0) per (stock, date); a rerun replaces it."""
    w, chosen = forecast.window, forecast.candidates[forecast.best]
    candidates = json.dumps([{"label": c.label, "explanation": c.explanation, "reward": c.reward}
                             for c in forecast.candidates], ensure_ascii=False)
    with transaction(db):
        db.execute("DELETE FROM predictions WHERE stock = ? AND date = ? AND method = 'best-of-n'", [w.stock, w.date])
        db.execute(
            "INSERT INTO predictions (stock, date, trial, target_day, actual, label, explanation, confidence, correct, "
            "response, prompt, model, created_at, method, candidates) VALUES (?,?,0,?,?,?,?,?,?,?,?,?,?,'best-of-n',?)",
            [w.stock, w.date, w.target_day, w.label, forecast.label, forecast.explanation, forecast.confidence,
             int(forecast.label == w.label), chosen.response, forecast.prompt, forecast.model, now_iso(), candidates])
