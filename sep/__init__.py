"""sep: explainable next-day stock prediction with self-reflective LLMs (SEP + market feedback).

Where each stage lives, in the order data flows. A stage writes only the tables of the one
SQLite memory named beside it (→), and reads what the stages above it wrote:

  settings, errors      configuration (SEP_* variables, flags override), errors a user can fix
  tradingdays, window   calendars and the time rule: what a decision at the end of D may read
  memory                the SQLite file and its numbered migrations (sep/migrations) → _migrations
  ingest, crawl         price/text files and the Naver board → prices, stocks, texts, imports,
                        crawl_pages
  dedup                 marks each text a copy, off-topic or a representative (BERTopic)
                        → texts' marks, dedup_runs, topics, topic_models
  models, llm           the packaged GGUF catalog; backends by name (embedded, openai, policy, mock)
  adapters              trained LoRA adapters: the PEFT folder and its llama.cpp GGUF twin (no table)
  quality               the gate every generated text passes (no table)
  agents                summarize, explain, reflect (prompts in sep/prompts) → summaries,
                        predictions, reflections, pairs
  predict               best-of-n forecasts → predictions (method best-of-n)
  train_config, train   SFT, reward, PPO, GRPO on pairs and predictions → runs/ folders, runs
  batch, experiment     many stocks and days (jobs/*.toml) → jobs, batch_items; walk-forward arms
                        → experiments, experiment_forecasts
  evaluate, audit       scores and reports over stored forecasts; read only (audit writes HTML)
  api                   one call per stage, re-exported here
  cli                   the `sep` command: parses, calls api, prints

Start with `help(sep.reflect)` or the README's "Python API" section.
"""

from sep.api import *  # noqa: F401,F403
from sep.api import __all__ as _api

__version__ = "0.1.0"
__all__ = [*_api, "__version__"]
