"""The Python API: each stage of `sep` as one call, re-exported from `sep` itself.

A package by stage (data, decisions, runs, ledger; `common` is what they share). The CLI only
parses options, calls one of these and prints the result, so a notebook gets
exactly what `sep reflect` or `sep eval` does. Every call takes an open memory (`open_memory`)
and optional `Settings` (default: the `SEP_*` environment); every result is a dataclass with
`.as_json()`. Long calls take a `progress(stage, done, total)` callback.

Each call imports its stage module when it runs, so `import sep` and `sep --help` stay quick
(about 0.5 s; importing every stage up front doubles it). Every one of those imports goes down
the map in `help(sep)`, which tests/test_layout.py checks.

    import sep
    db = sep.open_memory("memory/sep.db")
    sep.import_prices(db, ["005930.csv", "stock_list.csv"])
    sep.import_texts(db, ["samsung_raw_naver_finance_news.xlsx"])
    run = sep.reflect(db, "005930", date="2022-06-01", settings=sep.Settings(trials=2))
    print(run.results[0].trials[0].explanation)
    print(sep.evaluate_forecasts(db, stock="005930").as_json()["accuracy"])
"""

from __future__ import annotations

from sep.api.data import (
                          Imported,
                          crawl_naver_board,
                          deduplicate,
                          import_prices,
                          import_sample,
                          import_texts,
                          open_memory,
                          show_window,
                          unflag_text,
)
from sep.api.decisions import (
                          Reflected,
                          Stanced,
                          decision_days,
                          export_pairs,
                          forecast,
                          make_llm,
                          mock_llm,
                          reflect,
                          register_backend,
                          stance,
)
from sep.api.ledger import (
                          ledger_add,
                          ledger_evaluate,
                          ledger_export,
                          ledger_run,
                          ledger_score,
                          ledger_show,
                          ledger_verify,
)
from sep.api.runs import (
                          TRAINERS,
                          Audited,
                          Evaluation,
                          ExperimentResult,
                          Reported,
                          Scope,
                          Trained,
                          audit_explanations,
                          batch_status,
                          eval_report,
                          evaluate_forecasts,
                          execute_batch,
                          experiment_report,
                          export_batch,
                          ingest_batch,
                          list_experiments,
                          run_batch,
                          run_experiment,
                          scope,
                          show_experiment,
                          train_model,
)
from sep.ingest import PriceFormat, TextFormat, register_format
from sep.settings import Settings

__all__ = [
    "Settings", "open_memory", "import_prices", "import_texts", "import_sample", "show_window", "deduplicate",
    "decision_days", "make_llm", "mock_llm", "register_backend", "reflect", "forecast", "stance", "Stanced",
    "train_model", "TRAINERS",
    "run_batch", "batch_status", "export_batch", "ingest_batch", "execute_batch",
    "Scope", "scope", "evaluate_forecasts", "eval_report", "run_experiment", "show_experiment", "list_experiments",
    "experiment_report", "Reported", "audit_explanations",
    "crawl_naver_board", "unflag_text", "export_pairs", "PriceFormat", "TextFormat", "register_format",
    "Imported", "Reflected", "Trained", "Evaluation", "ExperimentResult", "Audited",
    "ledger_add", "ledger_run", "ledger_score", "ledger_verify", "ledger_export", "ledger_show", "ledger_evaluate",
]
# Names differ from the stage modules (sep.dedup, sep.train, ...): importing a module sets an
# attribute of the same name on the package, which would shadow a function called like it.
