"""The openai backend: any OpenAI-compatible server through langchain-openai; in production `vllm serve`.

On vLLM the label line is constrained with `extra_body={"structured_outputs": {"regex": ...}}`
and prompts are counted by its /tokenize; other servers get free text, which the parser still
reads (label on the first line). A trained policy is sent as the LoRA module the server lists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sep.adapters import run_data_end
from sep.backends.registry import register_backend
from sep.errors import BadInput
from sep.llm import LLM, LLMUnavailable
from sep.shapes import AnswerShape
from sep.settings import Settings


def probe_server(base_url: str, api_key: str, timeout: float) -> tuple[list[str], bool]:
    """(model ids, is it vLLM?) from GET /models; a server that is down is a clear error."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=min(timeout, 10))
        resp.raise_for_status()
        models = resp.json().get("data", [])
    except (httpx.HTTPError, ValueError) as exc:
        raise LLMUnavailable(f"No OpenAI-compatible server answers at {base_url} ({type(exc).__name__}: {exc}). "
                             "Start one (e.g. `vllm serve MODEL`) or drop --base-url to use the embedded model.") from None
    ids = [m.get("id") for m in models if m.get("id")]
    return ids, any(m.get("owned_by") == "vllm" for m in models)


def server_tokenizer(base_url: str, model: str, api_key: str, timeout: float
                     ) -> tuple[int | None, Callable[[list[dict]], int] | None]:
    """(context, token counter) from vLLM's /tokenize (its chat template, its tokenizer); (None, None) if absent."""
    import httpx

    url = base_url.rstrip("/").removesuffix("/v1") + "/tokenize"
    # one client for every count: a new one per call loads the CA bundle again (16 ms of CPU each,
    # which at 64 requests in flight was the bottleneck)
    client = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout,
                          limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def count(messages: list[dict]) -> dict:
        reply = client.post(url, json={"model": model, "messages": messages})
        reply.raise_for_status()
        return reply.json()

    try:
        probe = count([{"role": "user", "content": "ping"}])
    except (httpx.HTTPError, ValueError):
        return None, None
    if not isinstance(probe, dict) or "count" not in probe:
        return None, None
    return probe.get("max_model_len"), lambda messages: int(count(messages)["count"])


def served_policy(policy: Path | str, served: list[str], base_url: str) -> str:
    """The model id to send for `--policy NAME --base-url URL`: the LoRA module the server lists
    under that name (or under a run folder's name, e.g. runs/sft → sft); one sentence otherwise."""
    for candidate in (str(policy), Path(policy).name):
        if candidate in served:
            return candidate
    raise BadInput(f"The server at {base_url} lists no model {policy} (it lists {', '.join(served) or 'none'}); "
                           f"serve the adapter with `vllm serve BASE --enable-lora --lora-modules "
                           f"{Path(policy).name}=runs/{Path(policy).name}/adapter`.")


def chat_client(cfg: Settings, model: str, is_vllm: bool, http_client: Any = None) -> tuple[Any, Callable[[AnswerShape], dict]]:
    """(the ChatOpenAI client, the answer binding) every request to a server is made with: a live run
    sends through them; `sep batch export` sends through them too, to an `http_client` that writes
    each body to a file instead of the network."""
    from langchain_openai import ChatOpenAI

    # vLLM takes llama.cpp's repetition penalty too; unset, the server's default (1.0) applies.
    vllm_body = {"repetition_penalty": cfg.repeat_penalty} if is_vllm and cfg.repeat_penalty else {}
    chat = ChatOpenAI(base_url=cfg.base_url or "http://127.0.0.1/v1", api_key=cfg.api_key, model=model,
                      timeout=cfg.timeout, max_retries=0, temperature=0.0, seed=cfg.seed, logprobs=True,
                      top_logprobs=5, extra_body=vllm_body or None, http_client=http_client)

    def binding(shape: AnswerShape) -> dict:
        if not is_vllm:
            return {}
        return {"extra_body": {**vllm_body, "structured_outputs": {"regex": shape.regex()}}}

    return chat, binding


@register_backend("openai")
def _openai_backend(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> LLM:
    """An OpenAI-compatible server (vLLM constrains the label with structured outputs)."""
    if not cfg.base_url:
        raise BadInput("The openai backend needs a server: pass --base-url (or SEP_BASE_URL).")
    ids, is_vllm = probe_server(cfg.base_url, cfg.api_key, cfg.timeout)
    model = served_policy(cfg.policy, ids, cfg.base_url) if cfg.policy else cfg.model or (ids[0] if ids else None)
    if not model:
        raise LLMUnavailable(f"The server at {cfg.base_url} lists no models; pass --model NAME.")
    chat, binding = chat_client(cfg, model, is_vllm)
    context, counter = server_tokenizer(cfg.base_url, model, cfg.api_key, cfg.timeout) if is_vllm else (None, None)
    return LLM(f"{model}@{cfg.base_url}", chat, binding, retries=cfg.retries, context=context, count_tokens=counter,
               parallel=True,
               data_end=run_data_end(cfg.policy) if cfg.policy else None)
