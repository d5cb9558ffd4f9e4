"""One place for configuration: env vars (SEP_*) overridden by CLI flags."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sep.errors import BadInput


# Tokens each agent may answer with: the answer's share of the context (the prompt gets the rest)
# and, for explanations, the length the RL trainers generate.
MAX_TOKENS = {"summarize": 200, "explain": 240, "reflect": 120, "kind": 8}
SUMMARIZERS = ("auto", "model", "extractive")  # SEP_SUMMARIZER / --summarizer
EXPLAIN_FORMATS = ("derived", "evidence", "label")  # SEP_EXPLAIN_FORMAT / --explain-format
EXAMPLES_PER_LABEL = 2  # `sep stance --examples`: the nearest labelled texts of each label shown as worked examples
EVIDENCE_TOKENS = 200  # of an evidence-first explanation's tokens, the most its cited items (before the label) may take



Progress = Callable[[str, int, int], None]  # (stage, done, total): every long call reports through one

def evidence_tokens(max_tokens: int) -> int:
    """The tokens an evidence-first answer's cited items may take: part of the call's own budget (+8 by
    a grammar for the marker and the label)."""
    return min(EVIDENCE_TOKENS, max_tokens)


@cache
def plugins(group: str) -> dict[str, Any]:
    """What installed packages register under an entry point group (`sep.backends`,
    `sep.formats`), loaded once per process, the way llm's plugins register models."""
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in entry_points(group=group)}


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sep"


class Settings(BaseSettings):
    """Everything a run can be told. Read from `SEP_<NAME>`; CLI flags override.

    Why one object: every stage (ingest, agents, training, evaluation) reads the same
    values, so a flag set once means the same thing everywhere.
    """

    model_config = SettingsConfigDict(env_prefix="SEP_", extra="ignore", populate_by_name=True)

    db: Path = Field(Path("memory/sep.db"), description="SQLite long-term memory.")
    backend: str | None = Field(None, description="The LLM backend by name: openai, policy, embedded, mock "
                                "(scripted, in-process), or one a plugin registers (entry point group "
                                "`sep.backends`). Unset: openai with a base URL, policy with a policy, else embedded.")
    base_url: str | None = Field(
        None, validation_alias=AliasChoices("base_url", "SEP_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible server (e.g. `vllm serve`), like http://host:8000/v1; OPENAI_BASE_URL when "
        "SEP_BASE_URL is unset. Unset: embedded model."
    )
    model: str | None = Field(None, description="The model: with a server, its model id (default: the first it "
                              "lists); without, a catalog name from `sep models list` (default qwen2.5-coder-1.5b).")
    model_file: Path | None = Field(None, description="Any local GGUF with a chat template, run embedded instead of "
                                    "a catalog model.")
    repeat_penalty: float | None = Field(None, gt=0, description="Repetition penalty; unset: the catalog's "
                                         "measured value for the model (the server's default on a server).")
    policy: Path | None = Field(
        None, description="A trained policy: a `sep train` run folder, run embedded (its base GGUF plus the run's "
        "llama.cpp adapter); with --base-url, the name of the LoRA module the server serves it under "
        "(`vllm serve BASE --enable-lora --lora-modules NAME=RUN/adapter`)."
    )
    api_key: str = Field("EMPTY", validation_alias=AliasChoices("api_key", "SEP_API_KEY", "OPENAI_API_KEY"),
                         description="API key for the server (OPENAI_API_KEY when SEP_API_KEY is unset); vLLM accepts any.")
    cutoff: str | None = Field(None, description="The answering model's training-data cutoff (YYYY-MM-DD): an "
                               "experiment scores the days before and after it apart. Unset: the catalog's, from the "
                               "model card, for an embedded model; unknown for a served one (set it, e.g. `[llm] cutoff`).")
    threads: int = Field(2, ge=1, description="CPU threads for the embedded model and torch.")
    context: int = Field(4096, ge=256, description="Context of the embedded model in tokens; a day's texts are cut "
                         "to fit it, measured with the model's own tokenizer.")
    repeatable: bool = Field(False, description="Embedded model: evaluate each answer's prompt from its first token "
                             "instead of reusing llama.cpp's cache of a prefix an earlier prompt shared, so the same "
                             "prompt gives the same answer in any process and after any other prompt (the cache can "
                             "change a near-tie). Slower: the shared prefix, most of a stance prompt, is read again.")
    cache_dir: Path = Field(default_factory=_default_cache, description="Where prepared models live.")
    window_days: int = Field(5, ge=1, description="Calendar days of text a decision reads (T).")
    trials: int = Field(3, ge=1, description="Explain attempts per decision, reflections between them (N).")
    forecast_attempts: int = Field(3, ge=1, description="Times a forecast may be asked before it is withheld: an "
                                   "answer the quality gate flags (copied, ungrounded, invented numbers, ...) is asked "
                                   "again, sampled at the retry temperature and still without the outcome; the first "
                                   "clean answer is the forecast, else the first answer, withheld.")
    retry_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the retries after a "
                                     "reflection (trial 0, the forecast, is greedy): a greedy retry that reads an "
                                     "unhelpful lesson repeats the same answer.")
    best_of: int = Field(4, ge=1, description="Candidates a best-of-n forecast samples (`sep predict`, the best_of_n arm).")
    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature of best-of-n candidates.")
    concurrency: int = Field(8, ge=1, description="Requests in flight against a server (batch jobs, experiments, "
                             "a reflected range); the embedded model answers one at a time.")
    timeout: float = Field(120.0, gt=0, description="Seconds before one LLM request gives up.")
    retries: int = Field(3, ge=1, description="Attempts per LLM request (exponential backoff).")
    seed: int = Field(0, description="Seed for sampling and anything random.")
    prompts: Path | None = Field(None, description="A folder of prompt files (<lang>/<agent>.toml, like prompts/); "
                                 "each file it holds replaces the packaged one.")
    explain_format: str = Field("derived", pattern=f"^({'|'.join(EXPLAIN_FORMATS)})$", description="How an explanation "
                                "answers: `derived`: every item's direction is judged first (the stance step), the "
                                "answer cites the 1-3 items that matter with those directions, and the label follows "
                                "from them (more + than -: up; more -: down; a tie: the model's call), then two "
                                "sentences why (prompts/<lang>/explain_derived.toml); `evidence`: the same items with "
                                "the model's own directions and label (explain.toml); `label`: the label on the first "
                                "line, then the reasons (explain_label.toml).")
    summarizer: str = Field("auto", pattern=f"^({'|'.join(SUMMARIZERS)})$", description="`auto`: a day of news or "
                            "report headlines or tweets shows its top texts as written (`extractive`), a day with "
                            "board posts is summarized by the model; `model`: the LLM writes cited points for every "
                            "day (falling back to `extractive` when they fail the quality check); `extractive`: the "
                            "day's top representative titles, no model call.")
    summary_points: int = Field(5, ge=1, le=20, description="Most points in one day's summary.")
    embedder: str = Field("use", description="Sentence embedder for dedup: `use` (packaged multilingual USE) or a "
                          "sentence-transformers path/name.")
    offtopic: Path | None = Field(None, description="TOML of off-topic seed keywords; unset: the packaged sep/offtopic.toml.")
    dedup_top_k: int = Field(10, ge=1, description="Representative texts kept per (stock, day).")
    dedup_near_threshold: float = Field(0.85, gt=0, le=1, description="Cosine similarity that makes two texts one story.")
    dedup_min_topic_size: int = Field(5, ge=2, description="Smallest BERTopic cluster.")

    @field_validator("cutoff")
    @classmethod
    def _cutoff_is_a_day(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValueError("a knowledge cutoff is a date, YYYY-MM-DD") from None

    def with_overrides(self, **flags: object) -> "Settings":
        """Return a copy where every flag that was given (not None) wins over env/defaults, checked
        by the same rules as the environment (a flag can't set what SEP_<NAME> may not)."""
        given = {k: v for k, v in flags.items() if v is not None}
        if not given:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise invalid_setting(exc, str(exc.errors()[0]["loc"][0])) from None


def invalid_setting(exc: ValidationError, setting: str | None) -> BadInput:
    """The first error as one sentence naming the setting (its flag or SEP_<NAME>), else the field."""
    err = exc.errors()[0]
    where = f"{setting} (its flag or SEP_{setting.upper()})" if setting else str(err["loc"][0])
    return BadInput(f"{where}: {err['msg'][0].lower() + err['msg'][1:]}, not {err.get('input')!r}.")


def default(name: str) -> Any:
    """The default of setting `name`, for a signature elsewhere: each default is written once, in
    `Settings` (tests/test_layout.py finds any literal copy)."""
    return Settings.model_fields[name].get_default(call_default_factory=True)
