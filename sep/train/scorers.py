"""Trained reward runs loaded to score text: a model head (transformers + the run's LoRA) or an
embedding head (the base GGUF's pooled embedding times a learned vector). best-of-n, PPO and GRPO use them,
the last two through `MarketFeedback`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sep.adapters import read_adapter
from sep.errors import BadInput
from sep.llm import ChatFormat, as_messages
from sep.quality import Check, dates_in
from sep.models import CATALOG
from sep.settings import Settings, default
from sep.train.base import TrainingBase, torch_threads, turn_tokenizer
from sep.train.rewards import rlmf_rewards


def reward_model_and_tokenizer(base: TrainingBase) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    tok = turn_tokenizer(base)
    model = AutoModelForSequenceClassification.from_pretrained(base.folder, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


@dataclass
class RewardModel:
    """A trained reward run, loaded (adapter merged, eval mode), scoring in its base's chat format."""

    model: Any
    tok: Any
    fmt: ChatFormat
    base: str

    def scores(self, prompt: str | list[dict], responses: list[str]) -> list[float]:
        return reward_scores(self.model, self.tok, self.fmt, prompt, responses)


def load_reward_model(run: Path, settings: Settings, threads: int = default("threads")) -> RewardModel:
    """A `sep train reward` run on the base it was trained on."""
    from peft import PeftModel

    torch_threads(threads)
    base = TrainingBase.of_run(settings, run)
    model, tok = reward_model_and_tokenizer(base)
    model = PeftModel.from_pretrained(model, read_adapter(run).folder).merge_and_unload()
    model.eval()
    return RewardModel(model, tok, base.fmt, base.name)


def reward_text(fmt: ChatFormat, prompt: str | list[dict], response: str | list[dict]) -> str:
    """prompt + response closed by the turn end: the exact text the reward model is trained and read on."""
    return fmt.prompt(prompt) + fmt.response(response)


def reward_scores(model: Any, tok: Any, fmt: ChatFormat, prompt: str | list[dict], responses: list[str]) -> list[float]:
    """The reward model's scalar for prompt + each response, formatted exactly as in training."""
    import torch

    texts = [reward_text(fmt, prompt, r) for r in responses]
    scores = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=2048)
            scores.append(float(model(**ids).logits[0, 0]))
    return scores


def pair_metrics(rm: RewardModel, rows: list[dict]) -> dict:
    """Held-out pair accuracy (chosen scored above rejected) and mean margin."""
    margins = []
    for r in rows:
        chosen, rejected = rm.scores(r["prompt"], [r["chosen"], r["rejected"]])
        margins.append(chosen - rejected)
    if not margins:
        return {"eval_pairs": 0, "pair_accuracy": None, "margin": None}
    return {"eval_pairs": len(margins), "pair_accuracy": sum(m > 0 for m in margins) / len(margins),
            "margin": sum(margins) / len(margins)}


HEAD_FILE = "reward_head.json"


@dataclass
class EmbeddingReward:
    """A `--head embedding` reward run: w·embedding(prompt + response) by the base's GGUF, one prefill each."""

    weights: Any
    encoder: Any
    fmt: ChatFormat
    base: str

    def scores(self, prompt: str | list[dict], responses: list[str]) -> list[float]:
        import numpy as np

        vectors = np.array(self.encoder([reward_text(self.fmt, prompt, r) for r in responses]))
        return [float(v) for v in vectors @ self.weights]


def embedding_reward(settings: Settings, base_model: str, weights: Any, threads: int) -> EmbeddingReward:
    from sep.backends.embedded import GGUFEncoder
    from sep.models import local_model

    if base_model not in CATALOG:
        raise BadInput(f"--head embedding reads the base model's GGUF, so it needs a catalog --base-model "
                       f"({', '.join(CATALOG)}), not {base_model}.")
    local = local_model(settings.cache_dir, base_model)
    return EmbeddingReward(weights, GGUFEncoder(local, threads, settings.context), ChatFormat.of(local.chat_template),
                           base_model)


def load_reward(run: Path, settings: Settings, threads: int = default("threads")) -> "RewardModel | EmbeddingReward":
    """Either kind of reward run, ready to score (prompt, responses) in its base's chat format."""
    import numpy as np

    head = Path(run) / HEAD_FILE
    if head.exists():
        saved = json.loads(head.read_text())
        return embedding_reward(settings, saved["base_model"], np.array(saved["weights"]), threads)
    return load_reward_model(run, settings, threads)




@dataclass
class MarketFeedback:
    """PPO's and GRPO's reward for a batch of completions (RLMF, `rlmf_rewards`): the market's verdict on
    each answer, a reward run's score, or both, as `--reward-kind` says."""

    kind: str
    fmt: ChatFormat
    model: "RewardModel | EmbeddingReward | None" = None
    market_scale: float = 1.0
    model_weight: float = 0.5
    signal_threshold: float | None = None
    seen: list[float] = field(default_factory=list)  # every model score so far: their spread is the model's scale

    @classmethod
    def of(cls, config: Any, settings: Settings, fmt: ChatFormat, market_scale: float) -> "MarketFeedback":
        model = load_reward(config.reward, settings, config.threads) if config.reward_kind != "market" else None
        threshold = config.signal_threshold if getattr(config, "signal_score", False) else None
        return cls(config.reward_kind, fmt, model, market_scale, config.model_weight, threshold)

    def __call__(self, texts: list[str], chats: list[Any], rets: list[float] | None,
                 days: list[str] | None = None) -> list[float]:
        scores = [self.model.scores(c, [self.fmt.strip(t)])[0] for c, t in zip(chats, texts)] if self.model else None
        flagged = [bool(d) and bool(gate_flags(t, c, d)) for t, c, d in zip(texts, chats, days)] if days else None
        return rlmf_rewards(texts, rets, self.kind, scores, self.seen, market_scale=self.market_scale,
                            model_weight=self.model_weight, signal_threshold=self.signal_threshold, flagged=flagged)


def gate_flags(text: str, chat: Any, day: str) -> list[str]:
    """The quality gate's flags on an answer to a stored explain prompt, as inference checks an explanation:
    not the prompt's instructions, grounded in its inputs (the last user turn), no date outside the
    window (its earliest date to the decision day)."""
    messages = as_messages(chat)
    inputs = messages[-1]["content"]
    instructions = "\n".join(m["content"] for m in messages[:-1])
    first = min([*dates_in(inputs), day])
    return Check(instructions, inputs, first, day, kind="explanation").flags(text)
