"""sep: explainable next-day stock prediction with self-reflective LLMs."""

__version__ = "0.1.0"
