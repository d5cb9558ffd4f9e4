"""Learn from reflections: SFT, a reward model, a PPO policy and market-feedback GRPO (RLMF).

Fixes three defects of SEP's reference code:
* pairs are oriented by the market: `chosen` is the response whose label matched the next close;
* the reward model is scored on a held-out split, never on its training pairs;
* every trainer renders prompts with `sep.llm.render_chat`, the template inference uses.

Every run writes a directory (config.json, metrics.json, data.sha256, adapter/, checkpoints/),
is recorded in the `runs` table, resumes from its last checkpoint when rerun with the same --out,
and shows the trainer's progress bar. All training uses LoRA (peft) on the packaged Gemma-3 270M,
de-quantized once by `prepare_hf_model`; external TRL-format JSONL files are accepted everywhere.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.errors import BadInput
from sep.llm import TURN_END, adapter_folder, parse_answer, render_chat
from sep.memory import now_iso, transaction
from sep.settings import Settings

# ---------------------------------------------------------------- configs (one beside each trainer)


@dataclass
class RunConfig:
    """What every run shares. Stored as config.json and in `runs.config`."""

    out: Path
    max_steps: int = 20
    learning_rate: float = 2e-4
    batch_size: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    max_length: int = 1024
    save_steps: int = 10
    seed: int = 0
    threads: int = 2

    def as_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class SFTRunConfig(RunConfig):
    kind: str = "sft"


@dataclass
class RewardRunConfig(RunConfig):
    kind: str = "reward"
    eval_fraction: float = 0.2  # held out for pair accuracy and margin; never trained on


@dataclass
class PPORunConfig(RunConfig):
    kind: str = "ppo"
    reward: Path | None = None          # a `sep train reward` run: the reward model, and the value model's start
    sft: Path | None = None             # a `sep train sft` run: merged into the policy before PPO's LoRA
    kl_coef: float = 0.05
    missing_eos_penalty: float = 1.0    # a response that never ends its turn loses this much reward
    response_length: int = 32
    temperature: float = 0.7
    learning_rate: float = 1e-5


@dataclass
class GRPORunConfig(RunConfig):
    kind: str = "grpo"
    reward_kind: str = "market"         # market | model | both
    reward: Path | None = None          # the reward model, for `model` and `both`
    model_weight: float = 0.5           # `both`: market + model_weight * reward model
    signal_score: bool = False          # FinRLlama's variant: a score in [-10, 10] instead of a label
    signal_threshold: float = 3.0       # |score| below this takes no position (reward 0)
    num_generations: int = 2
    max_completion_length: int = 32
    sft: Path | None = None


# ---------------------------------------------------------------- rewards from the market


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


_SCORE = re.compile(r"[-+−]?\d+(?:\.\d+)?")


def parse_signal(text: str) -> float | None:
    """The first number in [-10, 10] in a response (FinRLlama's signal score)."""
    for m in _SCORE.finditer(text.replace("−", "-")):
        value = float(m.group())
        if -10 <= value <= 10:
            return value
    return None


def signal_reward(score: float | None, ret: float, threshold: float) -> float:
    """Position sign(score) when |score| >= threshold, else flat (0); unparsable counts as wrong."""
    if score is None:
        return -abs(ret)
    if abs(score) < threshold:
        return 0.0
    return ret if score > 0 else -ret


# ---------------------------------------------------------------- data


def chat_prompt(prompt: str | list[dict]) -> str:
    """Any prompt (plain text, or TRL conversational messages) rendered with the one chat template."""
    from langchain_core.messages import AIMessage, HumanMessage

    if isinstance(prompt, list):
        return render_chat([AIMessage(m["content"]) if m.get("role") == "assistant" else HumanMessage(m["content"])
                            for m in prompt])
    if prompt.startswith("<start_of_turn>"):
        return prompt
    return render_chat([HumanMessage(prompt)])


def _content(value: str | list[dict]) -> str:
    if isinstance(value, list):  # conversational completion: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in value)
    return value


def response_text(response: str | list[dict]) -> str:
    """A response as it ends in training and scoring: the model turn closed by <end_of_turn>."""
    text = _content(response).strip()
    return text if text.endswith(TURN_END) else text + TURN_END


def read_jsonl(path: Path, need: Iterable[str]) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise BadInput(f"Can't read {path} as JSON lines: {exc}") from None
    missing = [k for k in need if rows and k not in rows[0]]
    if not rows or missing:
        raise BadInput(f"{path} needs rows with {', '.join(need)}" + (f" (missing {', '.join(missing)})." if missing else "; it is empty."))
    return rows


def sft_rows(db: sqlite_utils.Database | None, data: Path | None) -> list[dict]:
    """prompt/completion: correct trial-0 answers from memory, or a TRL prompt-completion file."""
    if data:
        rows = read_jsonl(data, ("prompt", "completion"))
        return [{"prompt": chat_prompt(r["prompt"]), "completion": response_text(r["completion"])} for r in rows]
    rows = db.execute("SELECT prompt, response FROM predictions WHERE method = 'reflect' AND trial = 0 AND correct = 1 "
                      "ORDER BY stock, date").fetchall()
    return [{"prompt": chat_prompt(p), "completion": response_text(r)} for p, r in rows]


def pair_rows(db: sqlite_utils.Database | None, pairs: Path | None) -> list[dict]:
    """prompt/chosen/rejected, chosen being the response the market proved right.

    From memory the orientation is checked against the stored outcome (`predictions.actual`),
    not trusted: a pair whose chosen label is not the actual move is swapped.
    """
    if pairs:
        rows = read_jsonl(pairs, ("prompt", "chosen", "rejected"))
        return [{"prompt": chat_prompt(r["prompt"]), "chosen": response_text(r["chosen"]),
                 "rejected": response_text(r["rejected"]), **({"ret": r["ret"]} if "ret" in r else {})} for r in rows]
    rows = db.execute(
        "SELECT p.prompt, p.chosen, p.rejected, p.chosen_label, "
        "(SELECT actual FROM predictions q WHERE q.stock = p.stock AND q.date = p.date AND q.method = 'reflect' LIMIT 1), "
        "p.stock, p.date FROM pairs p ORDER BY p.stock, p.date, p.id").fetchall()
    out = []
    for prompt, chosen, rejected, chosen_label, actual, stock, date in rows:
        if actual and chosen_label != actual:
            chosen, rejected = rejected, chosen
        out.append({"prompt": chat_prompt(prompt), "chosen": response_text(chosen), "rejected": response_text(rejected),
                    "stock": stock, "date": date})
    return out


def with_returns(db: sqlite_utils.Database | None, rows: list[dict]) -> list[dict]:
    """Attach the realized next-day return (`ret`) the market reward needs, from memory when absent."""
    from sep.window import outcome, parse_day

    out = []
    for r in rows:
        if "ret" not in r:
            if db is None or "stock" not in r:
                raise BadInput("The market reward needs each row's realized return: give `ret`, or `stock` and `date` "
                               "with prices in memory.")
            r = {**r, "ret": outcome(db, r["stock"], parse_day(r["date"]))[4]}
        out.append(r)
    return out


def data_hash(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- models


def _torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def base_model_dir(settings: Settings) -> Path:
    from sep.llm import prepare_hf_model

    return prepare_hf_model(settings.cache_dir)


def lora(cfg: RunConfig, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type=task_type,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def adapter_dir(run: Path) -> Path:
    """A run folder's adapter (or the path itself when it already is an adapter folder); bad input otherwise."""
    path = adapter_folder(run)
    if path is None:
        raise BadInput(f"{run} is not a `sep train` run folder or LoRA adapter (no adapter_config.json).")
    return path


def load_policy(base: Path, sft: Path | None) -> Any:
    """The causal LM to train on: the base, with an SFT adapter merged in when given."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    if sft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir(sft)).merge_and_unload()
    return model


def load_reward_model(run: Path, base: Path, threads: int = 2) -> tuple[Any, Any]:
    """(sequence classifier with the reward adapter merged, tokenizer), in eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _torch_threads(threads)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model = PeftModel.from_pretrained(model, adapter_dir(run)).merge_and_unload()
    model.eval()
    return model, tok


def reward_scores(model: Any, tok: Any, prompt: str, responses: list[str]) -> list[float]:
    """The reward model's scalar for prompt + each response, formatted exactly as in training."""
    import torch

    texts = [chat_prompt(prompt) + response_text(r) + tok.eos_token for r in responses]
    scores = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=2048)
            scores.append(float(model(**ids).logits[0, 0]))
    return scores


def pair_metrics(model: Any, tok: Any, rows: list[dict]) -> dict:
    """Held-out pair accuracy (chosen scored above rejected) and mean margin."""
    margins = []
    for r in rows:
        chosen, rejected = reward_scores(model, tok, r["prompt"], [r["chosen"], r["rejected"]])
        margins.append(chosen - rejected)
    if not margins:
        return {"eval_pairs": 0, "pair_accuracy": None, "margin": None}
    return {"eval_pairs": len(margins), "pair_accuracy": sum(m > 0 for m in margins) / len(margins),
            "margin": sum(margins) / len(margins)}


# ---------------------------------------------------------------- the run directory and the runs table


@dataclass
class Run:
    """One training run: its folder and its `runs` row. Rerunning the same --out resumes it."""

    db: sqlite_utils.Database | None
    cfg: RunConfig
    rows: list[dict]
    id: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def start(self) -> "Run":
        self.out.mkdir(parents=True, exist_ok=True)
        digest = data_hash(self.rows)
        old = self.out / "data.sha256"
        if old.exists() and old.read_text().strip() != digest and self.last_checkpoint():
            raise BadInput(f"{self.out} holds a run on other data; pick a new --out (or delete it to start over).")
        old.write_text(digest + "\n")
        (self.out / "config.json").write_text(json.dumps(self.cfg.as_json(), indent=2))
        if self.db is not None:
            with transaction(self.db):
                cur = self.db.execute(
                    "INSERT INTO runs (kind, out, config, data_hash, examples, status, started_at) VALUES (?,?,?,?,?,?,?)",
                    [self.cfg.kind, str(self.out.resolve()), json.dumps(self.cfg.as_json()), digest, len(self.rows),
                     "running", now_iso()])
                self.id = cur.lastrowid
        return self

    def last_checkpoint(self) -> str | None:
        ckpts = sorted((self.out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        return str(ckpts[-1]) if ckpts else None

    def finish(self, metrics: dict) -> dict:
        metrics = {"kind": self.cfg.kind, "examples": len(self.rows), **metrics}
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
        if self.db is not None and self.id is not None:
            with transaction(self.db):
                self.db.execute("UPDATE runs SET status = 'done', metrics = ?, finished_at = ? WHERE id = ?",
                                [json.dumps(metrics), now_iso(), self.id])
        return metrics

    def fail(self, exc: BaseException) -> None:
        if self.db is not None and self.id is not None:
            with transaction(self.db):
                self.db.execute("UPDATE runs SET status = 'failed', metrics = ?, finished_at = ? WHERE id = ?",
                                [json.dumps({"error": f"{type(exc).__name__}: {exc}"}), now_iso(), self.id])


def _cpu_only() -> bool:
    """Train on the CPU only when torch sees no GPU (accelerate launch spreads GPU runs)."""
    import torch

    return not torch.cuda.is_available()


def _trainer_args(cfg: RunConfig, cls: type, **extra: Any) -> Any:
    return cls(output_dir=str(Path(cfg.out) / "checkpoints"), max_steps=cfg.max_steps,
               per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
               logging_steps=1, save_steps=cfg.save_steps, save_total_limit=2, report_to=[], seed=cfg.seed,
               use_cpu=_cpu_only(), dataloader_num_workers=0, **extra)


def save_adapter(run: Run, model: Any, tok: Any) -> None:
    """The run's result: LoRA weights and the tokenizer (with the chat template) in out/adapter."""
    model.save_pretrained(run.out / "adapter")
    tok.save_pretrained(run.out / "adapter")


def _train_with_resume(run: Run, trainer: Any) -> dict:
    resume = run.last_checkpoint()
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "resumed_from": resume, "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def _execute(settings: Settings, cfg: RunConfig, db: sqlite_utils.Database | None, rows: list[dict],
             body: Callable[[Run, Path], dict]) -> dict:
    """What every trainer shares: torch threads, the base model folder, and a run recorded even when it fails."""
    _torch_threads(cfg.threads)
    base = base_model_dir(settings)
    run = Run(db, cfg, rows).start()
    try:
        return run.finish(body(run, base))
    except BaseException as exc:
        run.fail(exc)
        raise


# ---------------------------------------------------------------- trainers


def train_sft(settings: Settings, cfg: SFTRunConfig, db: sqlite_utils.Database | None, data: Path | None) -> dict:
    """LoRA SFT on prompt/completion; the loss covers the completion only."""
    rows = sft_rows(db, data)
    if not rows:
        raise BadInput("No SFT examples: memory holds no correct trial-0 answers yet (run `sep reflect`), or pass --data.")

    def body(run: Run, base: Path) -> dict:
        from datasets import Dataset
        from transformers import AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        tok = AutoTokenizer.from_pretrained(base)
        trainer = SFTTrainer(model=load_policy(base, None), processing_class=tok, train_dataset=Dataset.from_list(rows),
                             peft_config=lora(cfg, "CAUSAL_LM"),
                             args=_trainer_args(cfg, SFTConfig, max_length=cfg.max_length, completion_only_loss=True))
        metrics = _train_with_resume(run, trainer)
        save_adapter(run, trainer.model, tok)
        return metrics

    return _execute(settings, cfg, db, rows, body)


def train_reward(settings: Settings, cfg: RewardRunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """Bradley–Terry reward model (TRL RewardTrainer, sequence-classification head, LoRA); held-out metrics."""
    rows = pair_rows(db, pairs)
    if len(rows) < 2:
        raise BadInput(f"A reward model needs at least 2 pairs (one held out); found {len(rows)}. "
                       "Run `sep reflect` over more days, or pass --pairs FILE.jsonl.")
    import random

    order = list(range(len(rows)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = max(1, round(len(rows) * cfg.eval_fraction))
    held_out, train = [rows[i] for i in order[:n_eval]], [rows[i] for i in order[n_eval:]]

    def body(run: Run, base: Path) -> dict:
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        columns = ("prompt", "chosen", "rejected")
        trainer = RewardTrainer(model=model, processing_class=tok,
                                train_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in train]),
                                peft_config=lora(cfg, "SEQ_CLS"),
                                args=_trainer_args(cfg, RewardConfig, max_length=cfg.max_length))
        metrics = _train_with_resume(run, trainer)
        save_adapter(run, trainer.model, tok)
        trainer.model.eval()
        return {**metrics, "train_pairs": len(train), **pair_metrics(trainer.model, tok, held_out)}

    return _execute(settings, cfg, db, rows, body)


def train_ppo(settings: Settings, cfg: PPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """PPO (trl.experimental.ppo) on the pairs' prompts: policy = SFT + LoRA, reference = the frozen
    policy (adapter off), value model initialised from the reward model. One step = one PPO update."""
    if not cfg.reward:
        raise BadInput("sep train ppo needs --reward DIR (a `sep train reward` run).")
    rows = pair_rows(db, pairs)
    if not rows:
        raise BadInput("No prompts: memory holds no pairs yet (run `sep reflect`), or pass --pairs FILE.jsonl.")

    def body(run: Run, base: Path) -> dict:
        import torch
        from datasets import Dataset
        from peft import PeftModel, get_peft_model
        from transformers import AutoTokenizer
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        tok = AutoTokenizer.from_pretrained(base)
        tok.padding_side = "left"
        reward_model, _ = load_reward_model(cfg.reward, base, cfg.threads)
        value_model = copy.deepcopy(reward_model).train()  # starts as the reward model, then learns values
        policy = load_policy(base, cfg.sft)
        resume = run.last_checkpoint()
        done = 0
        if resume and (Path(resume) / "adapter_config.json").exists():  # PPO has no trainer resume: reload the adapter
            policy = PeftModel.from_pretrained(policy, resume, is_trainable=True)
            done = int(Path(resume).name.split("-")[-1])
        else:
            policy = get_peft_model(policy, lora(cfg, "CAUSAL_LM"))
        remaining = max(cfg.max_steps - done, 0)
        prompts = [r["prompt"] for r in rows]
        dataset = Dataset.from_list([{"input_ids": tok(p, truncation=True, max_length=cfg.max_length)["input_ids"]}
                                     for p in prompts])
        args = PPOConfig(output_dir=str(run.out / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
                         num_mini_batches=1, total_episodes=max(remaining, 1) * cfg.batch_size,
                         local_rollout_forward_batch_size=cfg.batch_size, num_ppo_epochs=1,
                         response_length=cfg.response_length, temperature=cfg.temperature,
                         stop_token_id=tok.convert_tokens_to_ids(TURN_END), kl_coef=cfg.kl_coef,
                         missing_eos_penalty=cfg.missing_eos_penalty, learning_rate=cfg.learning_rate,
                         num_sample_generations=0, save_steps=cfg.save_steps, report_to=[], seed=cfg.seed,
                         use_cpu=_cpu_only(), logging_steps=1)
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
                             value_model=value_model, train_dataset=dataset)
        if remaining:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                trainer.train()
        updates = trainer.state.global_step if remaining else 0
        save_adapter(run, trainer.model.policy, tok)
        ckpt = run.out / "checkpoints" / f"checkpoint-{done + updates}"
        trainer.model.policy.save_pretrained(ckpt)  # what a rerun resumes from
        logs = [h for h in trainer.state.log_history if "objective/scores" in h]
        return {"updates": updates, "resumed_from": resume, "total_updates": done + updates,
                "mean_score": logs[-1]["objective/scores"] if logs else None,
                "kl": logs[-1].get("objective/kl") if logs else None}

    return _execute(settings, cfg, db, rows, body)


def train_grpo(settings: Settings, cfg: GRPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """RLMF with TRL GRPOTrainer: the reward is the realized next-day return signed by the answer
    (`market_reward`), optionally mixed with the reward model (`both`) or only the model (`model`)."""
    if cfg.reward_kind not in ("market", "model", "both"):
        raise BadInput(f"--reward must be market, model or both, not {cfg.reward_kind!r}.")
    if cfg.batch_size % cfg.num_generations:
        raise BadInput(f"--batch-size {cfg.batch_size} must be a multiple of --num-generations {cfg.num_generations}.")
    if cfg.reward_kind != "market" and not cfg.reward:
        raise BadInput("--reward model|both needs --reward-model DIR (a `sep train reward` run).")
    rows = pair_rows(db, pairs)
    if not rows:
        raise BadInput("No prompts: memory holds no pairs yet (run `sep reflect`), or pass --pairs FILE.jsonl.")
    if cfg.reward_kind != "model":
        rows = with_returns(db, rows)

    def body(run: Run, base: Path) -> dict:
        from datasets import Dataset
        from transformers import AutoTokenizer
        from trl import GRPOConfig, GRPOTrainer

        tok = AutoTokenizer.from_pretrained(base)
        rm = load_reward_model(cfg.reward, base, cfg.threads) if cfg.reward_kind != "market" else None

        def rlmf(prompts: list[str], completions: list[str], ret: list[float] | None = None, **_: Any) -> list[float]:
            out = []
            for i, (prompt, completion) in enumerate(zip(prompts, completions)):
                text = _content(completion)
                market = 0.0
                if cfg.reward_kind != "model":
                    market = (signal_reward(parse_signal(text), ret[i], cfg.signal_threshold) if cfg.signal_score
                              else market_reward(parse_answer(text).label, ret[i]))  # the label line, as inference reads it
                model_score = reward_scores(rm[0], rm[1], prompt, [text])[0] if rm else 0.0
                out.append(market if cfg.reward_kind == "market" else
                           model_score if cfg.reward_kind == "model" else market + cfg.model_weight * model_score)
            return out

        data = [{"prompt": r["prompt"], **({"ret": float(r["ret"])} if "ret" in r else {})} for r in rows]
        args = _trainer_args(cfg, GRPOConfig, num_generations=cfg.num_generations,
                             max_completion_length=cfg.max_completion_length, temperature=0.9)
        trainer = GRPOTrainer(model=load_policy(base, cfg.sft), reward_funcs=rlmf, args=args,
                              train_dataset=Dataset.from_list(data), processing_class=tok,
                              peft_config=lora(cfg, "CAUSAL_LM"))
        metrics = _train_with_resume(run, trainer)
        save_adapter(run, trainer.model, tok)
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {**metrics, "mean_reward": sum(rewards) / len(rewards) if rewards else None}

    return _execute(settings, cfg, db, rows, body)

