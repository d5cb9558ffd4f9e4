"""Backends by name: the built-in ones register here, plugins through the `sep.backends` entry points."""

from __future__ import annotations

from collections.abc import Callable

from sep.errors import BadInput
from sep.llm import LLM
from sep.settings import Settings, plugins


Backend = Callable[[Settings, Callable[[int, int], None] | None], "LLM"]


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str) -> Callable[[Backend], Backend]:
    """Add a backend under `name` (`SEP_BACKEND` / `sep.Settings(backend=...)` picks it). Third
    parties register through the `sep.backends` entry point group instead, the way llm plugins do."""
    def add(factory: Backend) -> Backend:
        BACKENDS[name] = factory
        return factory
    return add


def backends() -> dict[str, Backend]:
    """Every backend: the built-in ones and those of installed plugins (a built-in name wins)."""
    for name, factory in plugins("sep.backends").items():
        BACKENDS.setdefault(name, factory)
    return BACKENDS


def make_llm(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> LLM:
    """The backend `cfg.backend` names; unset: the server at `base_url`, else a trained `policy`,
    else the embedded model (prepared on first use)."""
    name = cfg.backend or ("openai" if cfg.base_url else "policy" if cfg.policy else "embedded")
    factory = backends().get(name)
    if factory is None:
        raise BadInput(f"Unknown backend '{name}': choose one of {', '.join(sorted(backends()))}.")
    return factory(cfg, progress)
