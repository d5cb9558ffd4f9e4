"""sep: explainable next-day stock prediction with self-reflective LLMs (SEP + market feedback).

Where each stage lives, in the order data flows. Each row is a floor: a module imports only
modules on its own row or the rows above it (a test holds the code to this map, and finds no
import cycle). A stage writes only the tables of the one SQLite memory named beside it (→):

  settings, errors      configuration (SEP_* variables, flags override), errors a user can fix
  guard                 texts that address the model, not the market: rules (sep/guard/rules.toml)
                        at import and dedup, a trained detector when a window is built; withheld
                        from every prompt (no table of its own)
  memory                the SQLite file and its numbered migrations (sep/memory/migrations), and the
                        typed stores that hold their tables' statements (a package: db, stances,
                        ledger, predictions, summaries, runs, jobs, experiments, dedup, audit,
                        stocks)
                        → _migrations, stances, ledger, ledger_outcomes, predictions, reflections,
                        pairs, summaries, runs, jobs, batch_items, batch_requests, batch_results,
                        experiments, experiment_forecasts, crawl_pages, faithfulness, prices, stocks,
                        texts, imports, dedup_runs, topics, topic_models
  tradingdays, window   calendars and the time rule: what a decision at the end of D may read
  ingest, crawl         price/text files and the Naver board, parsed and checked, then written
                        through memory (stocks) (ingest is a package: base, readers)
  dedup                 marks each text a copy, off-topic or a representative (BERTopic), written
                        through memory (dedup) (a package: parts, reducer, kernels)
  models, adapters      the packaged GGUF catalog; trained LoRA adapters (PEFT folder, GGUF twin)
  shapes                the shape an answer or a lesson must take, as a llama.cpp grammar and a
                        vLLM regex (read back from an offline request file)
  llm, backends, prompting  chat formats, the answer parser, the `LLM` facade; the backends that
                        make one (embedded, openai, policy, mock, plugins), and the embedded model
                        answering a Batch API requests file (batch_file); prompt files (prompts/)
  quality, mask         the gate every generated text passes; the company and dates hidden for
                        the memorization probe (no table)
  stances               the stance step: P(positive/neutral/negative) of one text, read from the
                        label words' log-probs (`sep stance`), cached through memory; optionally
                        beside a labelled file's nearest texts as worked examples (`--examples`)
  evidence              what summaries and answers cite: a point's text ids, the window's items an
                        answer cites with their judged stances, and the checks on them (no table)
  agents                summarize, explain, reflect (prompts in prompts/) → summaries,
                        predictions, reflections, pairs
  train                 SFT, stance, reward, PPO, GRPO on pairs and predictions → runs/ folders,
                        runs (a package, one trainer per file as in TRL: config, rewards, data,
                        base, run, scorers, sft, stance, reward, ppo, grpo)
  predict               best-of-n forecasts → predictions (method best-of-n)
  decide                one Plan (days → not done → windows → summaries, stances → decisions),
                        `concurrency` at a time: the one path under reflect, forecast, batch and
                        experiment (writes through agents, predict)
  jobs                  the job file schema (jobs/*.toml), [llm] and [experiment] tables
  evaluate, audit, report  scores and reports over stored forecasts; read only, but the audit's
                        faithfulness test asks the model again (cached through memory); `report` draws an
                        eval's or an experiment's HTML report (matplotlib SVG plots)
  batch, experiment     many stocks and days, offline stages as OpenAI Batch API files, and
                        walk-forward arms (written through memory's JobStore and ExperimentStore)
  ledger                pre-registered forecasts: decided before the target close exists, appended
                        to a hash chain, scored later, verified (its SQL is memory's LedgerStore)
  api                   one call per stage, re-exported here (a package: common, data, decisions,
                        runs, ledger)
  cli                   the `sep` command: parses, calls api, prints (a package of command groups:
                        common, data, models, decide, dedup, train, batch, evaluate, experiment, ledger)

Start with `help(sep.reflect)` or the README's "Python API" section.
"""

from sep.api import *  # noqa: F401,F403
from sep.api import __all__ as _api

__version__ = "0.1.0"
__all__ = [*_api, "__version__"]
