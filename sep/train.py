"""Learn from reflections: SFT, a reward model, a PPO policy and market-feedback GRPO (RLMF).

Fixes defects of SEP's reference code:
* pairs are oriented by the market: `chosen` is the response whose label matched the next close;
* the reward model is scored on the *last* days in time, never on its training pairs;
* every trainer learns on the model that explains (`--base-model`, default the default explaining
  model) and renders prompts with that model's own chat template, ending answers at its own
  turn-end token (`sep.llm.ChatFormat`), exactly as the policy will run;
* training is split in time: `start`/`end` keep decision days whose target day is on or before
  `end`, and each run records the range (`data_start`, `data_end`) so that anything later scored
  on or before `data_end` is reported as in-sample;
* labels are balanced by default, so "always 상승" can't pass for skill.

Every run writes a directory (config.json, metrics.json, data.sha256, adapter/, checkpoints/),
is recorded in the `runs` table, resumes from its last checkpoint when rerun with the same --out,
and shows the trainer's progress bar. All training uses LoRA (peft, every linear layer) on the
base's transformers folder (a catalog GGUF de-quantized once by `prepare_hf_model`, or a folder
you give); a causal-LM run also writes its adapter as a llama.cpp GGUF, so the embedded engine
runs it at the base model's speed. External TRL-format JSONL files are accepted everywhere.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.errors import BadInput
from sep.adapters import LEGACY_BASE, read_adapter, run_base, run_config, write_gguf_adapter
from sep.backends.policy import base_model_folder, chat_format
from sep.llm import ChatFormat, as_messages, content_text, parse_answer
from sep.memory import now_iso, transaction
from sep.models import CATALOG
from sep.settings import Settings, default
from sep.train_config import (CONFIGS, EXPLAIN_TOKENS, GRPORunConfig, PPORunConfig, RewardRunConfig,  # noqa: F401
                              RunConfig, SFTRunConfig, StanceRunConfig)  # the configs, importable from here as before

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


# ---------------------------------------------------------------- data


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


def sft_rows(db: sqlite_utils.Database | None, data: Path | None, model: str | None = None) -> list[dict]:
    """prompt/completion: the answers the market proved right, or a TRL prompt-completion file.

    From memory: each day's correct forecast (trial 0), and on the days the forecast was wrong,
    the right answer of the wrong→right pair, learned on the plain forecast prompt (SEP's
    distillation of what reflection found). Prompts are kept as chat messages and answers as
    plain text: the base model's chat format renders them when training starts (`ChatFormat`)."""
    if data:
        rows = read_jsonl(data, ("prompt", "completion"))
        return [{**{k: r[k] for k in ("stock", "date") if k in r}, "prompt": as_messages(r["prompt"]),
                 "completion": content_text(r["completion"]).strip()} for r in rows]
    found = db.execute("SELECT prompt, response, stock, date FROM predictions WHERE method = 'reflect' AND trial = 0 "
                       "AND correct = 1 AND (? IS NULL OR model = ?)", [model, model]).fetchall()
    rows = {(s, d): {"prompt": as_messages(p), "completion": r.strip(), "stock": s, "date": d} for p, r, s, d in found}
    for pair in pair_rows(db, None, model):
        rows.setdefault((pair["stock"], pair["date"]), {"prompt": pair["prompt"], "completion": pair["chosen"],
                                                        "stock": pair["stock"], "date": pair["date"]})
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))]


def pair_rows(db: sqlite_utils.Database | None, pairs: Path | None, model: str | None = None) -> list[dict]:
    """prompt/chosen/rejected, chosen being the response the market proved right.

    From memory the orientation is checked against the stored outcome (`predictions.actual`),
    not trusted: a pair whose chosen label is not the actual move is swapped.
    """
    if pairs:
        rows = read_jsonl(pairs, ("prompt", "chosen", "rejected"))
        return [{"prompt": as_messages(r["prompt"]), "chosen": content_text(r["chosen"]).strip(),
                 "rejected": content_text(r["rejected"]).strip(),
                 **{k: r[k] for k in ("ret", "stock", "date") if k in r}} for r in rows]
    rows = db.execute(
        "SELECT p.prompt, p.chosen, p.rejected, p.chosen_label, "
        "(SELECT actual FROM predictions q WHERE q.stock = p.stock AND q.date = p.date AND q.method = 'reflect' LIMIT 1), "
        "p.stock, p.date FROM pairs p WHERE (? IS NULL OR p.model = ?) ORDER BY p.date, p.stock, p.id",
        [model, model]).fetchall()
    out = []
    for prompt, chosen, rejected, chosen_label, actual, stock, date in rows:
        if actual and chosen_label != actual:
            chosen, rejected = rejected, chosen
        out.append({"prompt": as_messages(prompt), "chosen": chosen.strip(), "rejected": rejected.strip(),
                    "stock": stock, "date": date})
    return out


def day_rows(db: sqlite_utils.Database | None, pairs: Path | None, model: str | None = None) -> list[dict]:
    """GRPO's prompts: every decision day in memory (the forecast prompt; the market supplies the reward), or a file.

    GRPO needs only the prompt and the realised return, so it learns from every day, not only
    from the days that produced a wrong→right pair.
    """
    if pairs:
        return pair_rows(None, pairs)
    rows = db.execute("SELECT prompt, stock, date FROM predictions WHERE method = 'reflect' AND trial = 0 "
                      "AND (? IS NULL OR model = ?) GROUP BY stock, date ORDER BY date, stock", [model, model]).fetchall()
    return [{"prompt": as_messages(p), "stock": s, "date": d} for p, s, d in rows]


def select_days(db: sqlite_utils.Database | None, rows: list[dict], start: str | None, end: str | None
                ) -> tuple[list[dict], dict]:
    """Rows whose decision day is in [start, end] and whose target day is on or before `end`.

    Returns (rows, range) where range = {stocks, data_start, data_end}: data_end is the last day
    whose outcome the rows may carry (`end`, or the latest target day when no end is given), so a
    later score on or before it is in-sample. Rows without stock/date can't be placed in time:
    with a range they are refused; without one the range is unknown (None).
    """
    from sep.window import parse_day, trading_days

    dated = [r for r in rows if r.get("stock") and r.get("date")]
    if len(dated) < len(rows):
        if start or end:
            raise BadInput("--start/--end need every row to carry `stock` and `date`; this file has rows without them.")
        return rows, {"stocks": None, "data_start": None, "data_end": None}
    start, end = (parse_day(start) if start else None), (parse_day(end) if end else None)
    days: dict[str, Any] = {}
    out, targets = [], []
    for r in rows:
        date = parse_day(str(r["date"]))
        if start and date < start:
            continue
        stock = str(r["stock"])
        if db is not None and db.execute("SELECT 1 FROM prices WHERE stock = ? LIMIT 1", [stock]).fetchone():
            days.setdefault(stock, trading_days(db, stock))
            target = days[stock].after(date)
        else:
            target = None
        if end and (target or date) > end:  # its outcome was not known by `end`
            continue
        out.append(r)
        targets.append(target or date)
    stocks = sorted({str(r["stock"]) for r in out})
    return out, {"stocks": stocks, "data_start": start or (min(str(r["date"]) for r in out) if out else None),
                 "data_end": end or (max(targets) if targets else None)}


def label_of_row(row: dict) -> str | None:
    """The answer's label: the completion's for SFT, the chosen response's for pairs."""
    return parse_answer(row.get("completion") or row.get("chosen") or "").label


def balance(rows: list[dict], seed: int, enabled: bool = True) -> tuple[list[dict], dict]:
    """Downsample the majority label to the minority's count (seeded; time order kept).

    Without this, a model that always answers the more frequent label looks trained. When one
    label is missing entirely nothing can be balanced: rows are kept and the report says so.
    """
    import random

    labels = [label_of_row(r) for r in rows]
    before = {"up": labels.count("up"), "down": labels.count("down"), "none": labels.count(None)}
    report = {"labels_before": before, "balanced": False}
    if not enabled or not before["up"] or not before["down"] or before["up"] == before["down"]:
        report["labels_after"] = before
        if enabled and (not before["up"] or not before["down"]) and rows:
            report["note"] = "only one label present: nothing to balance against"
        return rows, report
    major = "up" if before["up"] > before["down"] else "down"
    idx = [i for i, lab in enumerate(labels) if lab == major]
    drop = set(random.Random(seed).sample(idx, len(idx) - before["down" if major == "up" else "up"]))
    kept = [r for i, r in enumerate(rows) if i not in drop]
    labels = [label_of_row(r) for r in kept]
    report.update(balanced=True, labels_after={"up": labels.count("up"), "down": labels.count("down"),
                                               "none": labels.count(None)})
    return kept, report


def training_rows(db: sqlite_utils.Database | None, cfg: "RunConfig", rows: list[dict], *, balanced: bool = True
                  ) -> tuple[list[dict], dict]:
    """The range selection, then (when the trainer learns from labels) the balance: what every trainer does first."""
    rows, span = select_days(db, rows, cfg.start, cfg.end)
    info = {**span}
    if balanced:
        rows, report = balance(rows, cfg.seed, cfg.balance)
        info.update(report)
    return rows, info


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


@dataclass(frozen=True)
class Base:
    """The model a run learns on: the name it was given (catalog name or folder), its transformers
    folder, and its chat format (template, turn end) read from its tokenizer."""

    name: str
    folder: Path
    fmt: ChatFormat

    @staticmethod
    def name_of(base_model: str | Path) -> str:
        """What a run records as its base, known without preparing it: a catalog name or a folder's path."""
        return str(base_model) if str(base_model) in CATALOG else str(Path(base_model).resolve())

    @classmethod
    def resolve(cls, settings: Settings, base_model: str | Path) -> "Base":
        folder = base_model_folder(settings.cache_dir, base_model)
        return cls(cls.name_of(base_model), folder, chat_format(folder))

    @classmethod
    def of_run(cls, settings: Settings, run: Path) -> "Base":
        """The base a run was trained on (its config.json); runs from before sep recorded one were Gemma-270M."""
        return cls.resolve(settings, run_base(run))


def same_base(run: Path, base: str, what: str) -> None:
    """Refuse, in one sentence, a run (an --sft or --reward) that was trained on another base."""
    other = run_base(run)
    if other != base:
        raise BadInput(f"{what} {run} was trained on {other}, not on {base}; train it again with "
                       f"--base-model {base}.")


def lora_targets(model: Any, which: str) -> str | list[str]:
    """The layers LoRA adapts, read off the architecture: `all-linear` (peft's every linear layer
    but the output head), or `attention`: the linear layers inside the model's attention blocks
    (q/k/v/o on Qwen2 and Gemma), found by module class, not by a list of one model's names."""
    if which == "all-linear":
        return "all-linear"
    import torch

    names = {child.rsplit(".", 1)[-1] for parent_name, parent in model.named_modules()
             if type(parent).__name__.endswith("Attention")
             for child, module in parent.named_modules(prefix=parent_name) if isinstance(module, torch.nn.Linear)}
    if not names:
        raise BadInput(f"{type(model).__name__} has no attention block sep can find; use --lora-targets all-linear.")
    return sorted(names)


def lora(cfg: RunConfig, task_type: str, model: Any) -> Any:
    from peft import LoraConfig

    targets = lora_targets(model, cfg.lora_targets)
    blocks = getattr(model.config, "num_hidden_layers", None)
    last = {}
    if cfg.lora_layers and blocks:  # peft picks blocks by number only from a list of module names
        import torch

        if targets == "all-linear":
            head = model.get_output_embeddings()
            targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                              if isinstance(module, torch.nn.Linear) and module is not head})
        last = {"layers_to_transform": list(range(max(0, blocks - cfg.lora_layers), blocks))}
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type=task_type,
                      target_modules=targets, **last)


def load_policy(base: Base, sft: Path | None) -> Any:
    """The causal LM to train on: the base, with an SFT adapter merged in when given."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.folder)
    if sft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, read_adapter(sft).folder).merge_and_unload()
    return model


def turn_tokenizer(base: Base) -> Any:
    """The base's tokenizer with its EOS set to the token that ends a model turn (`<|im_end|>` for
    ChatML, `<end_of_turn>` for Gemma).

    Reward training, PPO, GRPO and best-of-n all end a response there: the reward trainer appends
    no other EOS, PPO and GRPO stop generating there, PPO reads the reward there, and its
    missing-EOS penalty looks for that same token.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.folder)
    tok.eos_token = base.fmt.turn_end
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def reward_model_and_tokenizer(base: Base) -> tuple[Any, Any]:
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

    _torch_threads(threads)
    base = Base.of_run(settings, run)
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


# ---------------------------------------------------------------- memory: say so before starting

# Measured on 2 cores: SFT of Qwen2.5 1.5B (fp32 + LoRA, gradient checkpointing) on one 1,143-token
# example peaked at 9.8 GB: 6.2 GB of weights plus about 5 fp32 copies of the logits (tokens x
# vocab), which TRL keeps for the loss and its entropy and accuracy metrics. 6 leaves a margin.
LOGIT_COPIES = 6
MODEL_COPIES = {"sft": 1, "stance": 1, "reward": 1, "grpo": 1, "ppo": 3}  # PPO: policy (+ reference as adapter-off), value, reward


def weight_bytes(folder: Path) -> int:
    """fp32 bytes of a transformers folder's weights (its safetensors files)."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def estimated_peak(kind: str, folder: Path, batch: int, tokens: int) -> int:
    """Bytes a run is expected to peak at on the CPU (fp32), from the measured SFT point above."""
    config = json.loads((Path(folder) / "config.json").read_text())
    vocab = int(config.get("text_config", config).get("vocab_size", 0))
    logits = 0 if kind == "reward" else LOGIT_COPIES * batch * tokens * vocab * 4  # a reward head has one output
    return MODEL_COPIES[kind] * weight_bytes(folder) + logits


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (bytes); None where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(kind: str, base: Base, batch: int, tokens: int) -> int:
    """Refuse, before loading anything, a CPU run that would not fit in memory; return the estimate.
    `tokens`: the positions whose logits the trainer holds (the whole example, or GRPO's completion)."""
    need = estimated_peak(kind, base.folder, batch, tokens)
    have = available_memory()
    if have is not None and need > have and _cpu_only():
        gib = 1 << 30
        raise BadInput(f"sep train {kind} on {base.name} would need about {need / gib:.1f} GiB here (fp32 on the CPU: "
                       f"{MODEL_COPIES[kind]} model cop{'y' if MODEL_COPIES[kind] == 1 else 'ies'} and "
                       f"{batch} x {tokens}-token logits) and {have / gib:.1f} GiB is free: lower --batch-size or "
                       "--max-length, pick a smaller --base-model, or run it on a GPU (README, 'Training on a GPU').")
    return need


# ---------------------------------------------------------------- the run directory and the runs table


@dataclass
class Run:
    """One training run: its folder and its `runs` row. Rerunning the same --out resumes it."""

    db: sqlite_utils.Database | None
    cfg: RunConfig
    rows: list[dict]
    data: dict | None = None  # {stocks, data_start, data_end, labels...}: what the run learned from
    id: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def start(self) -> "Run":
        self.out.mkdir(parents=True, exist_ok=True)
        digest = data_hash(self.rows)
        old = self.out / "data.sha256"
        if old.exists() and old.read_text().strip() != digest and last_checkpoint(self.out):
            raise BadInput(f"{self.out} holds a run on other data; pick a new --out (or delete it to start over).")
        old.write_text(digest + "\n")
        span = {k: (self.data or {}).get(k) for k in ("stocks", "data_start", "data_end")}
        config = {**self.cfg.as_json(), **span}
        (self.out / "config.json").write_text(json.dumps(config, indent=2))
        if self.db is not None:
            with transaction(self.db):
                cur = self.db.execute(
                    "INSERT INTO runs (kind, out, config, data_hash, examples, status, started_at, stocks, data_start, "
                    "data_end, base_model) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [self.cfg.kind, str(self.out.resolve()), json.dumps(config), digest, len(self.rows),
                     "running", now_iso(), json.dumps(span["stocks"]) if span["stocks"] is not None else None,
                     span["data_start"], span["data_end"], self.cfg.base_model])
                self.id = cur.lastrowid
        return self

    def finish(self, metrics: dict) -> dict:
        metrics = {"kind": self.cfg.kind, "examples": len(self.rows), **(self.data or {}), **metrics}
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


def _precision() -> dict:
    """fp32 on the CPU: TRL's configs default to bf16, which a CPU without bf16 units runs through a
    reference GEMM about 100x slower (measured: one toy SFT step went from seconds to minutes)."""
    return {"use_cpu": True, "bf16": False, "fp16": False} if _cpu_only() else {"use_cpu": False}


def _trainer_args(cfg: RunConfig, cls: type, **extra: Any) -> Any:
    if cfg.lora_layers:  # recomputing activations would also send gradients through the frozen blocks below
        extra.setdefault("gradient_checkpointing", False)
    return cls(output_dir=str(Path(cfg.out) / "checkpoints"), max_steps=cfg.max_steps,
               per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
               logging_steps=1, save_steps=cfg.save_steps, save_total_limit=2, report_to=[], seed=cfg.seed,
               dataloader_num_workers=0, **_precision(), **extra)


def save_adapter(run: Run, model: Any, tok: Any, base: Base) -> dict:
    """The run's result in out/adapter: the PEFT LoRA weights and the tokenizer (with the chat
    template), which vLLM serves as they are, and for a causal LM the same adapter as a llama.cpp
    GGUF (`adapter.gguf`), which `--policy` runs embedded."""
    folder = run.out / "adapter"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if run.cfg.kind == "reward":
        return {}
    try:
        return {"gguf_adapter": str(write_gguf_adapter(folder, base.folder))}
    except BadInput as exc:  # an architecture llama.cpp's adapter format isn't written for yet: vLLM still serves it
        return {"gguf_adapter": None, "gguf_note": str(exc)}


def _train_with_resume(run: Run, trainer: Any) -> dict:
    resume = last_checkpoint(run.out)
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "resumed_from": resume, "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def longest_example(rows: list[dict], base: Base, tok: Any, generated: int = 0) -> int:
    """Tokens of the longest example (prompt + its longest answer, or + `generated` tokens for RL)."""
    lengths = []
    for r in rows:
        answer = max((str(r.get(k) or "") for k in ("completion", "chosen", "rejected")), key=len)
        text = base.fmt.prompt(r["prompt"]) + (base.fmt.response(answer) if answer else "")
        lengths.append(len(tok(text).input_ids) + generated)
    return max(lengths, default=0)


def last_checkpoint(out: Path) -> str | None:
    ckpts = sorted((Path(out) / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def refuse_other_base(out: Path, base: str) -> None:
    """A run folder resumes only on the base it was started on."""
    before = run_config(Path(out)).get("base_model") or LEGACY_BASE
    if last_checkpoint(out) and before != base:
        raise BadInput(f"{out} holds a run on {before}, not on {base}; pick a new --out (or delete it to start over).")


def _execute(settings: Settings, cfg: RunConfig, db: sqlite_utils.Database | None, rows: list[dict],
             body: Callable[[Run, Base], dict], data: dict | None = None, generated: int = 0) -> dict:
    """What every trainer shares: torch threads, the base model (and the same base for its --sft and
    --reward runs), a memory check before anything loads, and a run recorded even when it fails."""
    _torch_threads(cfg.threads)
    name = Base.name_of(cfg.base_model)  # refusals that need no model first: preparing one can take minutes
    for flag in ("sft", "reward"):
        if getattr(cfg, flag, None):
            same_base(Path(getattr(cfg, flag)), name, f"--{flag}")
    refuse_other_base(Path(cfg.out), name)
    base = Base.resolve(settings, cfg.base_model)
    cfg.base_model = base.name
    tokens = min(longest_example(rows, base, turn_tokenizer(base), generated), cfg.max_length + generated)
    logit_tokens = generated if cfg.kind == "grpo" else tokens  # GRPO computes logits for the completion only
    need = check_memory(cfg.kind, base, min(cfg.batch_size, len(rows)), logit_tokens)
    run = Run(db, cfg, rows, {**(data or {}), "longest_tokens": tokens, "estimated_peak_gb": round(need / 1e9, 1)}).start()
    try:
        return run.finish(body(run, base))
    except BaseException as exc:
        run.fail(exc)
        raise


# ---------------------------------------------------------------- trainers


def train_sft(settings: Settings, cfg: SFTRunConfig, db: sqlite_utils.Database | None, data: Path | None) -> dict:
    """LoRA SFT on prompt/completion; the loss covers the completion only."""
    rows, info = training_rows(db, cfg, sft_rows(db, data, cfg.model))
    if not rows:
        raise BadInput("No SFT examples: memory holds no correct trial-0 answers in that range yet (run `sep reflect`), "
                       "or pass --data.")

    return _execute(settings, cfg, db, rows, sft_body(rows, cfg), info)


def sft_body(rows: list[dict], cfg: RunConfig) -> Callable[[Run, Base], dict]:
    """TRL's SFTTrainer with a LoRA on prompt/completion rows (the loss on the completion only)."""
    def body(run: Run, base: Base) -> dict:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        tok = turn_tokenizer(base)
        dataset = Dataset.from_list([{"prompt": base.fmt.prompt(r["prompt"]), "completion": base.fmt.response(r["completion"])}
                                     for r in rows])
        model = load_policy(base, None)
        trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=dataset,
                             peft_config=lora(cfg, "CAUSAL_LM", model),
                             args=_trainer_args(cfg, SFTConfig, max_length=cfg.max_length, completion_only_loss=True,
                                                eos_token=base.fmt.turn_end))
        metrics = _train_with_resume(run, trainer)
        return {**metrics, **save_adapter(run, trainer.model, tok, base)}

    return body


def stance_rows(cfg: StanceRunConfig, data: Path, prompts_dir: Path | None = None) -> tuple[list[dict], dict]:
    """prompt/completion rows of a labelled file: the stance prompt of each text's language without its
    worked examples, and the label's answer word; `per_label` texts per label and language at most."""
    import dataclasses
    import random

    from sep.stances import STANCES, detect_lang, read_table, stance_prompt

    columns = [c.strip() for c in cfg.text_column.split(",") if c.strip()]
    table = read_table(data, columns, cfg.label_column)
    groups: dict[tuple[str, str], list[str]] = {}
    for text, label in zip(table.texts, table.labels or []):
        groups.setdefault((detect_lang(text), label), []).append(text)
    rows, counts = [], {}
    for (lang, label), texts in sorted(groups.items()):
        if cfg.per_label and len(texts) > cfg.per_label:
            texts = random.Random(cfg.seed).sample(texts, cfg.per_label)
        prompt = dataclasses.replace(stance_prompt(lang, prompts_dir), examples=())
        answer = prompt.labels[STANCES.index(label)]
        rows += [{"prompt": prompt.messages(text=t), "completion": answer, "lang": lang} for t in texts]
        counts[f"{lang}_{label}"] = len(texts)
    random.Random(cfg.seed).shuffle(rows)
    return rows, {"labels": counts}


def train_stance(settings: Settings, cfg: StanceRunConfig, db: sqlite_utils.Database | None, data: Path | None) -> dict:
    """LoRA SFT of the stance step on a labelled file; the run keeps the prompt it learned on."""
    if data is None:
        raise BadInput("sep train stance learns from a labelled file: pass --data FILE (CSV, xlsx or JSONL with "
                       "--text-column and --label-column).")
    from sep.prompting import write_prompt
    from sep.stances import stance_prompt

    rows, info = stance_rows(cfg, data, settings.prompts)

    def body(run: Run, base: Base) -> dict:
        import dataclasses

        for lang in sorted({r["lang"] for r in rows}):  # what `sep stance --policy RUN` will ask
            write_prompt(dataclasses.replace(stance_prompt(lang, settings.prompts), examples=()),
                         run.out / "prompts" / lang / "stance.toml")
        return sft_body([{k: r[k] for k in ("prompt", "completion")} for r in rows], cfg)(run, base)

    return _execute(settings, cfg, db, rows, body, info)


def train_reward(settings: Settings, cfg: RewardRunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """Bradley–Terry reward model (TRL RewardTrainer, sequence-classification head, LoRA).

    Held out: the last `eval_fraction` of the pairs in time (file order when rows carry no date),
    never a shuffle, so the score says how it does on days after the ones it learned from. Beside
    `pair_accuracy` stands `majority_accuracy`: how often "prefer the answer with the training
    majority's label" would be right on the same pairs.
    """
    rows, info = training_rows(db, cfg, pair_rows(db, pairs, cfg.model))
    if len(rows) < 2:
        raise BadInput(f"A reward model needs at least 2 pairs (one held out); found {len(rows)}. "
                       "Run `sep reflect` over more days, or pass --pairs FILE.jsonl.")
    train, held_out = time_split(rows, cfg.eval_fraction)
    if cfg.head == "embedding":
        return train_reward_head(settings, cfg, db, rows, train, held_out, info)

    def body(run: Run, base: Base) -> dict:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer

        model, tok = reward_model_and_tokenizer(base)
        # TRL drops pairs longer than max_length without a word: count them, and refuse when none is left
        fits = [r for r in train if max(len(tok(reward_text(base.fmt, r["prompt"], r[k])).input_ids)
                                        for k in ("chosen", "rejected")) <= cfg.max_length]
        if not fits:
            raise BadInput(f"All {len(train)} training pairs are longer than --max-length {cfg.max_length} tokens; "
                           "raise --max-length or shorten the window.")
        data = [{"prompt": base.fmt.prompt(r["prompt"]), "chosen": base.fmt.response(r["chosen"]),
                 "rejected": base.fmt.response(r["rejected"])} for r in train]
        trainer = RewardTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_list(data),
                                peft_config=lora(cfg, "SEQ_CLS", model),
                                args=_trainer_args(cfg, RewardConfig, max_length=cfg.max_length,
                                                   eos_token=base.fmt.turn_end))
        metrics = _train_with_resume(run, trainer)
        save_adapter(run, trainer.model, tok, base)
        trainer.model.eval()
        return {**metrics, "train_pairs": len(train), "too_long_dropped": len(train) - len(fits),
                "eval_first_day": held_out[0].get("date"),
                **pair_metrics(RewardModel(trainer.model, tok, base.fmt, base.name), held_out), "majority_accuracy": majority_pair_accuracy(train, held_out)}

    return _execute(settings, cfg, db, rows, body, info)


HEAD_FILE = "reward_head.json"


def fit_bradley_terry(diffs: Any, l2: float) -> Any:
    """w minimising mean log(1 + exp(-w·(e_chosen - e_rejected))) + l2/2 |w|²: a Bradley–Terry
    preference on embeddings (no bias: only differences are seen). Solved with L-BFGS in torch."""
    import torch

    x = torch.tensor(diffs, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> Any:
        opt.zero_grad()
        value = torch.nn.functional.softplus(-(x @ w)).mean() + l2 / 2 * (w @ w)
        value.backward()
        return value

    opt.step(loss)
    return w.detach().numpy()


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


def train_reward_head(settings: Settings, cfg: RewardRunConfig, db: sqlite_utils.Database | None, rows: list[dict],
                      train: list[dict], held_out: list[dict], info: dict) -> dict:
    """The laptop reward model: embed (prompt, chosen) and (prompt, rejected) once with the base's
    GGUF, fit a Bradley–Terry head on the differences, and score the held-out (last) pairs."""
    import time

    import numpy as np

    run = Run(db, cfg, rows, info).start()
    try:
        rm = embedding_reward(settings, cfg.base_model, None, cfg.threads)
        started = time.perf_counter()

        def embed(pairs: list[dict]) -> tuple[Any, Any]:
            vectors = np.array(rm.encoder([reward_text(rm.fmt, r["prompt"], r[k]) for r in pairs
                                           for k in ("chosen", "rejected")]))
            return vectors[0::2], vectors[1::2]

        train_chosen, train_rejected = embed(train)
        seconds = (time.perf_counter() - started) / (2 * len(train))
        rm.weights = fit_bradley_terry(train_chosen - train_rejected, cfg.l2)
        (run.out / HEAD_FILE).write_text(json.dumps({"base_model": cfg.base_model, "pooling": "last",
                                                     "weights": rm.weights.tolist()}))
        held_chosen, held_rejected = embed(held_out)
        margins = (held_chosen - held_rejected) @ rm.weights
        train_margins = (train_chosen - train_rejected) @ rm.weights
        return run.finish({"head": "embedding", "train_pairs": len(train), "eval_first_day": held_out[0].get("date"),
                           "eval_pairs": len(held_out), "pair_accuracy": float(np.mean(margins > 0)),
                           "margin": float(np.mean(margins)), "train_accuracy": float(np.mean(train_margins > 0)),
                           "majority_accuracy": majority_pair_accuracy(train, held_out),
                           "seconds_per_candidate": seconds})
    except BaseException as exc:
        run.fail(exc)
        raise


def time_split(rows: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, held out): the held-out rows are the last `fraction` in time (date, then file order), at least one."""
    order = sorted(range(len(rows)), key=lambda i: (str(rows[i].get("date", "")), i))
    n_eval = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    return [rows[i] for i in order[:-n_eval]], [rows[i] for i in order[-n_eval:]]


def majority_pair_accuracy(train: list[dict], held_out: list[dict]) -> float | None:
    """Accuracy on held-out pairs of always preferring the answer with the training majority's label (ties: half)."""
    labels = [label_of_row(r) for r in train]
    major = "up" if labels.count("up") >= labels.count("down") else "down"
    if not held_out:
        return None
    right = 0.0
    for r in held_out:
        chosen, rejected = label_of_row(r), parse_answer(r["rejected"]).label
        right += 1.0 if chosen == major != rejected else 0.5 if (chosen == major) == (rejected == major) else 0.0
    return right / len(held_out)


def train_ppo(settings: Settings, cfg: PPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """PPO (trl.experimental.ppo) on the pairs' prompts: policy = SFT + LoRA, reference = the frozen
    policy (adapter off), value model initialised from the reward model. One step = one PPO update."""
    if not cfg.reward:
        raise BadInput("sep train ppo needs --reward DIR (a `sep train reward` run).")
    if (Path(cfg.reward) / HEAD_FILE).exists():
        raise BadInput(f"PPO's value model starts from the reward model's weights, and {cfg.reward} is an embedding "
                       "head: train the reward model with --head model for PPO.")
    rows, info = training_rows(db, cfg, day_rows(db, pairs, cfg.model), balanced=False)  # the reward model needs no labels
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")

    def body(run: Run, base: Base) -> dict:
        import torch
        from datasets import Dataset
        from peft import PeftModel, get_peft_model
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        tok = turn_tokenizer(base)  # generation stops, the reward is read, and EOS is checked at the turn end
        tok.padding_side = "left"
        reward_model = load_reward_model(cfg.reward, settings, cfg.threads).model
        value_model = copy.deepcopy(reward_model).train()  # starts as the reward model, then learns values
        policy = load_policy(base, cfg.sft)
        resume = last_checkpoint(run.out)
        done = 0
        if resume and (Path(resume) / "adapter_config.json").exists():  # PPO has no trainer resume: reload the adapter
            policy = PeftModel.from_pretrained(policy, resume, is_trainable=True)
            done = int(Path(resume).name.split("-")[-1])
        else:
            policy = get_peft_model(policy, lora(cfg, "CAUSAL_LM", policy))
        remaining = max(cfg.max_steps - done, 0)
        prompts = [base.fmt.prompt(r["prompt"]) for r in rows]
        dataset = Dataset.from_list([{"input_ids": tok(p, truncation=True, max_length=cfg.max_length)["input_ids"]}
                                     for p in prompts])
        args = PPOConfig(output_dir=str(run.out / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
                         num_mini_batches=1, total_episodes=max(remaining, 1) * cfg.batch_size,
                         local_rollout_forward_batch_size=cfg.batch_size, num_ppo_epochs=1,
                         response_length=cfg.response_length, temperature=cfg.rollout_temperature,
                         stop_token_id=tok.eos_token_id, kl_coef=cfg.kl_coef,
                         missing_eos_penalty=cfg.missing_eos_penalty, learning_rate=cfg.learning_rate,
                         num_sample_generations=0, save_steps=cfg.save_steps, report_to=[], seed=cfg.seed,
                         logging_steps=1, **_precision())
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
                             value_model=value_model, train_dataset=dataset)
        if remaining:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                trainer.train()
        updates = trainer.state.global_step if remaining else 0
        saved = save_adapter(run, trainer.model.policy, tok, base)
        ckpt = run.out / "checkpoints" / f"checkpoint-{done + updates}"
        trainer.model.policy.save_pretrained(ckpt)  # what a rerun resumes from
        logs = [h for h in trainer.state.log_history if "objective/scores" in h]
        return {"updates": updates, "resumed_from": resume, "total_updates": done + updates,
                "mean_score": logs[-1]["objective/scores"] if logs else None,
                "kl": logs[-1].get("objective/kl") if logs else None,
                "eos_share": logs[-1].get("val/num_eos_tokens", 0) / cfg.batch_size if logs else None, **saved}

    return _execute(settings, cfg, db, rows, body, info, generated=cfg.response_length)


def train_grpo(settings: Settings, cfg: GRPORunConfig, db: sqlite_utils.Database | None, pairs: Path | None) -> dict:
    """RLMF with TRL GRPOTrainer: the reward is the realized next-day return signed by the answer
    (`market_reward`), optionally mixed with the reward model (`both`) or only the model (`model`)."""
    if cfg.batch_size % cfg.num_generations:
        raise BadInput(f"--batch-size {cfg.batch_size} must be a multiple of --num-generations {cfg.num_generations}.")
    if cfg.reward_kind != "market" and not cfg.reward:
        raise BadInput(f"--reward-kind {cfg.reward_kind} needs --reward DIR (a `sep train reward` run).")
    rows, info = training_rows(db, cfg, day_rows(db, pairs, cfg.model), balanced=False)  # the market gives the reward
    if not rows:
        raise BadInput("No prompts: memory holds no decisions in that range yet (run `sep reflect`), or pass --pairs FILE.jsonl.")
    if cfg.reward_kind != "model":
        rows = with_returns(db, rows)
    if cfg.signal_score:  # the prompt must ask for the score the reward reads
        rows = [{**r, "prompt": with_signal_instruction(r["prompt"])} for r in rows]
    market_scale = sum(abs(float(r["ret"])) for r in rows) / len(rows) if cfg.reward_kind != "model" else 1.0

    def body(run: Run, base: Base) -> dict:
        import statistics

        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        tok = turn_tokenizer(base)  # completions end at the turn end
        rm = load_reward(cfg.reward, settings, cfg.threads) if cfg.reward_kind != "market" else None
        seen: list[float] = []  # the reward model's scores so far: their spread is its scale

        def rlmf(prompts: list[str], completions: list[str], ret: list[float] | None = None,
                 chat: list[str] | None = None, **_: Any) -> list[float]:
            texts = [content_text(c) for c in completions]
            market = [0.0] * len(texts)
            if cfg.reward_kind != "model":
                market = [signal_reward(parse_signal(t), ret[i], cfg.signal_threshold) if cfg.signal_score
                          else market_reward(parse_answer(t).label, ret[i])  # the label line, as inference reads it
                          for i, t in enumerate(texts)]
            if cfg.reward_kind == "market":
                return market
            scores = [rm.scores(c, [base.fmt.strip(t)])[0] for c, t in zip(chat, texts)]
            if cfg.reward_kind == "model":
                return scores
            seen.extend(scores)
            model_scale = statistics.pstdev(seen) if len(seen) > 1 else 0.0
            return [mixed_reward(m, x, market_scale, model_scale or 1.0, cfg.model_weight) for m, x in zip(market, scores)]

        data = [{"prompt": base.fmt.prompt(r["prompt"]), "chat": json.dumps(r["prompt"], ensure_ascii=False),
                 **({"ret": float(r["ret"])} if "ret" in r else {})} for r in rows]
        args = _trainer_args(cfg, GRPOConfig, num_generations=cfg.num_generations,
                             max_completion_length=cfg.max_completion_length, temperature=0.9)
        model = load_policy(base, cfg.sft)
        trainer = GRPOTrainer(model=model, reward_funcs=rlmf, args=args,
                              train_dataset=Dataset.from_list(data), processing_class=tok,
                              peft_config=lora(cfg, "CAUSAL_LM", model))
        metrics = _train_with_resume(run, trainer)
        saved = save_adapter(run, trainer.model, tok, base)
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {**metrics, "mean_reward": sum(rewards) / len(rewards) if rewards else None,
                "market_scale": market_scale, **saved}

    return _execute(settings, cfg, db, rows, body, info, generated=cfg.max_completion_length)


# Each trainer by name: its config dataclass (the `sep train NAME` options) and the function that runs it.
TRAINERS: dict[str, tuple[type[RunConfig], Callable[..., dict]]] = {
    kind: (CONFIGS[kind], trainer) for kind, trainer in
    (("sft", train_sft), ("stance", train_stance), ("reward", train_reward), ("ppo", train_ppo), ("grpo", train_grpo))
}
