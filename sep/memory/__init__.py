"""Long-term memory: one SQLite file, WAL mode, numbered migrations (the simonw/llm pattern), and the
typed stores that hold every SQL statement the stages need (issue 33: the stages build typed rows
and hand them over; a store writes them in one transaction).

Plain tables so that Datasette or the sqlite3 shell can browse them. Every stage opens the
database through `open_memory`, so the schema is always current.

  db           open_memory, migrate (migrations/), transaction, now_iso
  predictions  predictions, reflections, pairs (`PredictionStore`)
  summaries    the summary cache (`SummaryStore`)
  stances      the stance cache
  ledger       pre-registered forecasts and their outcomes (`LedgerStore`)
  runs         training runs (`RunStore`)
  stocks       stock names, whether prices exist
"""

from sep.memory.db import (BUSY_TIMEOUT_MS, MemoryError_, insert_row, migrate, migration_files, now_iso, open_memory,
                           transaction)
from sep.memory.ledger import GENESIS, LedgerRow, LedgerStore, canonical, entry_hash
from sep.memory.predictions import PairRow, PredictionRow, PredictionStore, ReflectionRow
from sep.memory.runs import RunStore
from sep.memory.stances import StanceKey, cached_stances, store_stances
from sep.memory.stocks import has_prices, stock_name
from sep.memory.summaries import SummaryRow, SummaryStore

__all__ = ["BUSY_TIMEOUT_MS", "GENESIS", "LedgerRow", "LedgerStore", "MemoryError_", "PairRow", "PredictionRow",
           "PredictionStore", "ReflectionRow", "RunStore", "StanceKey", "SummaryRow", "SummaryStore", "cached_stances",
           "canonical", "entry_hash", "has_prices", "insert_row", "migrate", "migration_files", "now_iso", "open_memory",
           "stock_name", "store_stances", "transaction"]
