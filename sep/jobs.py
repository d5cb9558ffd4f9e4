"""The job file schema (`jobs/*.toml`): what `sep batch run` and `sep experiment run` read.

One pydantic model per table, strict: every key typed, no unknown key at any level, each field's
description its documentation (jobs/README.md's table is held to it by a test).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      model_validator)

from sep.errors import BadInput, ordered
from sep.ingest import normalise_stock
from sep.settings import Settings, default
from sep.window import parse_day


def _day(value: Any) -> Any:
    """TOML gives dates as `datetime.date`, quoted ones as strings; both become ISO days."""
    if isinstance(value, dt.date):
        value = value.isoformat()
    return parse_day(value) if isinstance(value, str) else value


def _stocks(value: Any) -> Any:
    """`stocks = "005930"` means one stock; codes are normalised as imports do (5930 → 005930)."""
    value = [value] if isinstance(value, str) else value
    return [normalise_stock(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


def _path(value: Any, info: ValidationInfo) -> Any:
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise BadInput(f"{info.field_name} must be a quoted path, not {value!r}.")
    return Path(value)


Day = Annotated[str, BeforeValidator(_day)]
RunPath = Annotated[Path | None, BeforeValidator(_path)]


ARMS = ("base", "memory", "masked", "sft", "best_of_n", "ppo", "grpo")
# the training runs each arm needs, in the order they are trained
NEEDS = {"base": [], "memory": [], "masked": [], "sft": ["sft"], "best_of_n": ["reward"],
         "ppo": ["sft", "reward", "ppo"], "grpo": ["sft", "grpo"]}


def _arms(value: Any) -> Any:
    if isinstance(value, list):
        unknown = [str(a) for a in value if a not in ARMS]
        if unknown or not value:
            raise BadInput(f"[experiment] arms: unknown arm {', '.join(unknown)}; choose among {', '.join(ARMS)}."
                           if unknown else f"[experiment] arms is empty; choose among {', '.join(ARMS)}.")
    return value


class ExperimentTable(BaseModel):
    """The `[experiment]` table of a job file: a walk-forward experiment's ranges and arms."""

    model_config = ConfigDict(extra="forbid", strict=True)
    train_start: Day = Field(description="First day reflected on (the training data).")
    train_end: Day = Field(description="Last day whose outcome training may see.")
    test_start: Day = Field(description="First scored day; leave an embargo after train_end.")
    test_end: Day = Field(description="Last scored day.")
    arms: Annotated[list[str], AfterValidator(_arms)] = Field(
        default_factory=lambda: list(ARMS), description=f"Among {', '.join(ARMS)}.")
    steps: int = Field(4, ge=1, description="Trainer steps per arm: small on CPU, large on GPU.")
    reward_head: Literal["embedding", "model"] = Field(
        "embedding", description="The reward run's head (`sep train reward --head`): embedding runs in llama.cpp, "
        "so PPO fits beside it on a laptop; model adds a fp32 copy of the base to PPO (a GPU's choice).")
    best_of: int | None = Field(None, ge=1, description=f"Candidates of the best_of_n arm (default: SEP_BEST_OF, {default('best_of')}).")
    folds: int = Field(1, ge=1, description="Walk-forward folds over the test days, expanding window: each "
                       "fold is reflected on and trained on everything known before it (less the embargo).")
    fold_days: int | None = Field(None, ge=1, description="Instead of `folds`: a new fold every N test days.")
    embargo: int = Field(1, ge=1, description="Trading days from a fold's training end to its first test day; at "
                         "least the label horizon (1).")

    @model_validator(mode="after")
    def _order(self) -> "ExperimentTable":
        if not self.train_start <= self.train_end < self.test_start <= self.test_end:
            raise BadInput("[experiment] needs train_start <= train_end < test_start <= test_end; got "
                           f"{self.train_start}, {self.train_end}, {self.test_start}, {self.test_end}.")
        if self.fold_days is not None and "folds" in self.model_fields_set:
            raise BadInput("[experiment] takes folds or fold_days, not both.")
        return self

    def trained_kinds(self) -> list[str]:
        """The training runs the arms need, each once, in training order."""
        return list(dict.fromkeys(k for arm in self.arms for k in NEEDS[arm]))


class LLMTable(BaseModel):
    """The `[llm]` table of a job file."""

    model_config = ConfigDict(extra="forbid", strict=True)
    base_url: str | None = Field(None, description="An OpenAI-compatible server (vLLM), like http://gpu:8000/v1.")
    model: str | None = Field(None, description="Its model id; without `base_url`, the embedded catalog model "
                              "(`sep models list`; default qwen2.5-coder-1.5b).")
    cutoff: Day | None = Field(None, description="The model's training-data cutoff (YYYY-MM-DD); unset: the "
                               "catalog's for an embedded model, unknown for a served one.")


class Job(BaseModel):
    """A job file: what to run, and against which model. The one schema of jobs/*.toml: strict types,
    no unknown key at any level, sensible ranges; each field's description is its documentation."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, description="The job's name: its results, failures and timings are kept under it.")
    stocks: Annotated[list[str], BeforeValidator(_stocks)] = Field(
        min_length=1, description="Codes or tickers; their prices (and texts) must be in memory.")
    start: Day = Field(description="First day of the range.")
    end: Day = Field(description="Last day; every trading day in the range with a known next close is decided.")
    trials: int | None = Field(None, ge=1, description="Explain attempts per day, reflecting between them "
                               f"(default: SEP_TRIALS, {default('trials')}).")
    concurrency: int | None = Field(None, ge=1, description="Requests in flight against the server (default: "
                                    f"SEP_CONCURRENCY, {default('concurrency')}; the embedded model takes 1).")
    window_days: int | None = Field(None, ge=1, description=f"Calendar days of text per decision (default: SEP_WINDOW_DAYS, {default('window_days')}).")
    dedup: bool = Field(False, description="Run `sep dedup` on each stock first.")
    best_of_n: int | None = Field(None, ge=1, description="Also store a best-of-n forecast per day from this many "
                                  "candidates (`sep predict`); unset: none.")
    policy: RunPath = Field(None, description="A trained policy run that answers instead of the model.")
    reward: RunPath = Field(None, description="A `sep train reward` run that picks the best-of-n candidate.")
    llm: LLMTable = LLMTable()
    experiment: ExperimentTable | None = Field(
        None, description="For `sep experiment run`: train_start, train_end, test_start, test_end (train_end < "
        "test_start), arms, steps, best_of, folds or fold_days, embargo.")

    @model_validator(mode="after")
    def _range(self) -> "Job":
        ordered(self.start, self.end, ("start", "end"))
        return self

    @property
    def base_url(self) -> str | None:
        return self.llm.base_url

    @property
    def model(self) -> str | None:
        return self.llm.model

    def settings(self, base: Settings) -> Settings:
        return base.with_overrides(base_url=self.base_url, model=self.model, policy=self.policy, trials=self.trials,
                                   window_days=self.window_days, concurrency=self.concurrency, cutoff=self.llm.cutoff)


def _schema_error(path: Path, exc: ValidationError) -> BadInput:
    """The first schema error as one sentence that names the key."""
    errors = exc.errors()
    for err in errors:  # a check of ours (a date, the range, [experiment]) already says it in a sentence
        if isinstance(err.get("ctx", {}).get("error"), BadInput):
            return BadInput(f"{path}: {err['ctx']['error']}")
    missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
    if missing:
        return BadInput(f"{path} needs {', '.join(missing)} (see jobs/README.md).")
    err = errors[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "(top level)"
    if err["type"] == "extra_forbidden" and key == "experiment.retrain_every":
        return BadInput(f"{path}: [experiment] retrain_every is now fold_days (a new fold every N test days).")
    if err["type"] == "extra_forbidden" and key == "best_of":
        return BadInput(f"{path}: best_of is now best_of_n (the candidates of a best-of-n forecast per day).")
    if err["type"] == "extra_forbidden":
        table = Job if len(err["loc"]) == 1 else {"llm": LLMTable, "experiment": ExperimentTable}[str(err["loc"][0])]
        return BadInput(f"{path}: unknown key {key}; allowed: {', '.join(table.model_fields)} (see jobs/README.md).")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return BadInput(f"{path}: {key}: {err['msg'][0].lower() + err['msg'][1:]}{shown}.")


def load_job(path: Path) -> Job:
    """Parse and check a job file; every mistake is one sentence (exit 2) naming the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"Can't read the job file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from None
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(path, exc) from None
