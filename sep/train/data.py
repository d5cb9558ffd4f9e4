"""What the trainers learn from: rows from memory or TRL-format files, split in time and balanced.

Training is split in time: `start`/`end` keep decision days whose target day is on or before
`end`, and each run records the range so anything later scored on or before it is in-sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlite_utils

from sep.errors import BadInput
from sep.llm import as_messages, content_text, parse_answer
from sep.memory import PredictionStore, has_prices
from sep.train.config import RunConfig


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
    found = PredictionStore(db).right_first_answers(model)
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
    rows = PredictionStore(db).pairs_with_outcome(model)
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
    rows = PredictionStore(db).first_prompts(model)
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
        if db is not None and stock not in days:  # each stock's calendar read once, not once per row
            days[stock] = trading_days(db, stock) if has_prices(db, stock) else None
        target = days[stock].after(date) if days.get(stock) else None
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


def training_rows(db: sqlite_utils.Database | None, config: "RunConfig", rows: list[dict], *, balanced: bool = True
                  ) -> tuple[list[dict], dict]:
    """The range selection, then (when the trainer learns from labels) the balance: what every trainer does first."""
    rows, span = select_days(db, rows, config.start, config.end)
    info = {**span}
    if balanced:
        rows, report = balance(rows, config.seed, config.balance)
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


def market_rows(db: sqlite_utils.Database | None, rows: list[dict], reward_kind: str) -> tuple[list[dict], float]:
    """The rows with the returns the market reward needs, and their mean |return| (the market's scale)."""
    if reward_kind == "model":
        return rows, 1.0
    rows = with_returns(db, rows)
    return rows, sum(abs(float(r["ret"])) for r in rows) / len(rows)


def data_hash(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()


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
