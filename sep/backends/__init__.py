"""Where an `LLM` comes from: one module per backend, chosen by name (`Settings.backend`).

* `embedded`: a catalog GGUF in-process through llama.cpp (the default without a server);
* `openai`: an OpenAI-compatible server (`--base-url`, vLLM in production);
* `policy`: a trained run (`--policy RUN`), its adapter on the embedded base or through transformers;
* `mock`: scripted answers in-process, for tests and notebooks;
* `registry`: `register_backend`, plugins (entry point group `sep.backends`) and `make_llm`.
"""

from sep.backends import embedded, mock, openai, policy  # noqa: F401  (each registers itself)
from sep.backends.registry import BACKENDS, backends, make_llm, register_backend

__all__ = ["BACKENDS", "backends", "make_llm", "register_backend"]
