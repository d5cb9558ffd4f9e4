"""Long-term memory: one SQLite file, WAL mode, numbered migrations (the simonw/llm pattern), and the
typed stores that hold every SQL statement the stages need (issue 33: the stages build typed rows
and hand them over; a store writes them in one transaction).

Plain tables so that Datasette or the sqlite3 shell can browse them. Every stage opens the
database through `open_memory`, so the schema is always current.

  db           open_memory, migrate (migrations/), transaction (and AlsoWrite, a write joining one), now_iso
  predictions  predictions, reflections, pairs (`PredictionStore`)
  summaries    the summary cache (`SummaryStore`)
  stances      the stance cache
  ledger       pre-registered forecasts and their outcomes (`LedgerStore`)
  runs         training runs (`RunStore`)
  jobs         batch jobs, their items, an offline job's requests and results (`JobStore`)
  dedup        each text's dedup marks, the runs, topics and topic models (`DedupStore`)
  experiments  walk-forward experiments and their arms' forecasts (`ExperimentStore`)
  audit        what an audit reads across the stores, and its faithfulness cache (`FaithfulnessStore`)
  stocks       stock names, closes, whether prices or texts exist, the board pages crawled
"""

from sep.memory.db import (BUSY_TIMEOUT_MS, AlsoWrite, MemoryError_, database_path, insert_row, migrate, migration_files, now_iso,
                           open_memory, transaction)
from sep.memory.dedup import DedupRun, DedupStore
from sep.memory.experiments import ArmForecast, ExperimentStore
from sep.memory.jobs import JobStore
from sep.memory.ledger import GENESIS, LedgerRow, LedgerStore, canonical, entry_hash
from sep.memory.predictions import PairRow, PredictionRow, PredictionStore, ReflectionRow
from sep.memory.runs import RunStore
from sep.memory.stances import StanceKey, cached_stances, store_stances
from sep.memory.stocks import closes_before, crawled_pages, has_prices, has_texts, record_crawled_page, stock_name
from sep.memory.summaries import SummaryRow, SummaryStore

__all__ = ["AlsoWrite", "ArmForecast", "BUSY_TIMEOUT_MS", "DedupRun", "DedupStore", "ExperimentStore", "GENESIS", "JobStore", "LedgerRow", "LedgerStore", "MemoryError_", "PairRow",
           "PredictionRow", "PredictionStore", "ReflectionRow", "RunStore", "StanceKey", "SummaryRow",
           "SummaryStore", "cached_stances", "canonical", "closes_before", "crawled_pages", "database_path", "entry_hash",
           "has_prices", "has_texts", "insert_row", "migrate", "migration_files", "now_iso", "open_memory",
           "record_crawled_page", "stock_name", "store_stances", "transaction"]
