"""sep: explainable next-day stock prediction with self-reflective LLMs (SEP + market feedback).

The stages, in the order data flows (one module each):
  ingest (files → memory) · memory (SQLite, migrations) · window (what D may read) · dedup
  (BERTopic) · agents (summarize, explain, reflect) · quality (the gate on generated text) ·
  predict (best-of-n) · train (SFT, reward, PPO, GRPO) · batch · evaluate · experiment · audit.

`sep.api` is the Python API, re-exported here; the `sep` command (sep.cli) calls the same
functions. Start with `help(sep.reflect)` or the README's "Python API" section.
"""

from sep.api import *  # noqa: F401,F403
from sep.api import __all__ as _api

__version__ = "0.1.0"
__all__ = [*_api, "__version__"]
