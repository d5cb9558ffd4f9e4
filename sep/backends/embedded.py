"""The embedded backend: a catalog GGUF (default Qwen2.5-Coder-1.5B-Instruct, see `sep.models`) or any
`--model-file`, in-process through xllamacpp (llama.cpp), with a grammar for the label line.
Chats are rendered with the model's own chat template, as vLLM and transformers would."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from sep.backends.registry import register_backend
from sep.errors import BadInput
from sep.llm import LLM, LLMUnavailable, chat_result, message_dicts, render_messages
from sep.shapes import AnswerShape, LessonShape, constrained_label
from sep.models import LocalModel, ModelError, ModelNotFound, local_model
from sep.settings import Settings, default, evidence_tokens


def server_params(model_path: str, threads: int, n_ctx: int, slots: int = 1) -> Any:
    """llama.cpp's settings for one in-process model: `slots` sequences decoded together (one, unless
    rollouts sample a group at once), each with `n_ctx` tokens of context; quiet, no warm-up."""
    import xllamacpp as xl

    params = xl.CommonParams()
    params.model.path = model_path
    params.n_ctx = n_ctx * slots
    params.n_parallel = slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    params.verbosity = -1
    return params


class EmbeddedChatModel(BaseChatModel):
    """A local GGUF in-process through xllamacpp. An `answer_shape` (sep.shapes.AnswerShape) constrains
    the answer by grammar: the label on the first line, or 1-3 evidence lines citing the window's
    ids, 판단: and the label; the reasons after it are free.

    Sampling settings (repetition penalty, stop strings) come from the model's catalog entry.
    """

    model_name: str
    model_path: str
    chat_template: str
    threads: int = default("threads")
    n_ctx: int = default("context")
    seed: int = default("seed")
    temperature: float = 0.0  # greedy unless a call samples (a retry, best-of-n)
    max_tokens: int = 200
    repeat_penalty: float = 1.0
    stop: list[str] = []
    lora: list[str] = []  # llama.cpp LoRA GGUFs applied on the base, in order (a trained policy)
    repeatable: bool = False  # each answer's first call evaluates its prompt from the first token (Settings.repeatable)
    slots: int = 1  # answers decoded together when called from that many threads (training's rollouts)
    _server: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "sep-embedded-llamacpp"

    def _ensure_server(self) -> Any:
        if self._server is None:
            import xllamacpp as xl

            params = server_params(self.model_path, self.threads, self.n_ctx, self.slots)
            params.lora_adapters = [xl.CommonAdapterLoraInfo(path, 1.0) for path in self.lora]
            self._server = xl.Server(params)
        return self._server

    def count_tokens(self, messages: list[dict]) -> int:
        """Tokens of the rendered chat, by the model's own tokenizer (the in-process server's /tokenize)."""
        import httpx

        prompt = render_messages(self.chat_template, messages)
        address = self._ensure_server().listening_address.rstrip("/")
        reply = httpx.post(f"{address}/tokenize", json={"content": prompt}, timeout=60)
        reply.raise_for_status()
        return len(reply.json()["tokens"])

    def _complete(self, prompt: str, *, first: bool = False, **request: Any) -> dict:
        """One completion. The first call of an answer skips the prompt cache when `repeatable`; the
        calls that continue it reuse what that call computed, which no other prompt touched."""
        cache = {"cache_prompt": False} if first and self.repeatable else {}
        result = self._ensure_server().handle_completions({"prompt": prompt, "seed": self.seed, **cache, **request})
        if "error" in result:
            raise LLMUnavailable(f"Embedded model failed: {result['error']}")
        return result

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = render_messages(self.chat_template, message_dicts(messages))
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        seed = kwargs.get("seed", self.seed)  # best-of-n varies it per sample
        sampling = {"temperature": temperature, "repeat_penalty": self.repeat_penalty, "seed": seed,
                    "stop": [*self.stop, *(stop or [])]}
        # usage as a server reports one request: its prompt's tokens, and how many of them llama.cpp's
        # prompt cache served (the continuation calls below re-read the same prompt from the cache)
        head, logprobs, usage_in, usage_out, evaluated = "", None, None, 0, 0
        shape = kwargs.get("answer_shape")
        if isinstance(shape, LessonShape):  # a reflection's three lines, by grammar; no label to read
            one = self._complete(prompt, first=True, max_tokens=max_tokens, grammar=shape.gbnf(), **sampling)
            return chat_result(one["choices"][0]["text"], None, self.model_name, one["usage"]["prompt_tokens"],
                                one["usage"]["completion_tokens"], one.get("timings"),
                                cached=max(0, one["usage"]["prompt_tokens"] - _evaluated(one)))
        if shape and shape.choices:  # one word of a few (a stance): its log-probs are the answer
            one = self._complete(prompt, first=True, max_tokens=8, grammar=shape.gbnf(), n_probs=50,
                                 temperature=temperature, seed=seed)
            return chat_result(one["choices"][0]["text"], one["choices"][0].get("logprobs"), self.model_name,
                                one["usage"]["prompt_tokens"], one["usage"]["completion_tokens"], one.get("timings"),
                                cached=max(0, one["usage"]["prompt_tokens"] - _evaluated(one)))
        if shape and shape.after:  # evidence first: 1-3 items citing the window's ids, then 판단: and the label, by grammar
            cited = self._complete(prompt, first=True, max_tokens=evidence_tokens(max_tokens) + 8, grammar=shape.gbnf(),
                                   n_probs=50, temperature=temperature, seed=seed)
            text = cited["choices"][0]["text"]
            usage_in, evaluated = cited["usage"]["prompt_tokens"], evaluated + _evaluated(cited)
            usage_out += cited["usage"]["completion_tokens"]
            max_tokens = max(16, max_tokens - cited["usage"]["completion_tokens"])
            if text.rstrip().endswith(shape.words):  # the label was reached: its log-probs are in this call's
                head, logprobs = text.rstrip() + "\n", cited["choices"][0].get("logprobs")
            else:  # cut off in its evidence or its label: close the evidence and constrain the label alone
                head = text.split(shape.after)[0].rstrip() + "\n" + shape.after + " "
        if shape and logprobs is None:
            fixed = shape.fixed_label(head)  # a derived answer's evidence may already fix its label
            grammar = f"root ::= {json.dumps(fixed, ensure_ascii=False)}" if fixed else AnswerShape(shape.up, shape.down).gbnf()
            first = self._complete(prompt + head, first=not head, max_tokens=8, grammar=grammar, n_probs=50,
                                   temperature=temperature, seed=seed)
            head = head + first["choices"][0]["text"].strip() + "\n"
            logprobs = first["choices"][0].get("logprobs")
            usage_in = first["usage"]["prompt_tokens"] if usage_in is None else usage_in
            evaluated += _evaluated(first)
            usage_out += first["usage"]["completion_tokens"]
        rest = self._complete(prompt + head, first=not head, max_tokens=max_tokens, **sampling)
        usage_in = rest["usage"]["prompt_tokens"] if usage_in is None else usage_in
        evaluated += _evaluated(rest)
        usage_out += rest["usage"]["completion_tokens"]
        return chat_result(head + rest["choices"][0]["text"], logprobs, self.model_name, usage_in, usage_out,
                            rest.get("timings"), cached=max(0, usage_in - evaluated))


def _evaluated(result: dict) -> int:
    """Prompt tokens llama.cpp computed for one call (the rest came from its prompt cache)."""
    timings = result.get("timings") or {}
    return int(timings.get("prompt_n", result["usage"]["prompt_tokens"]))


class GGUFEncoder:
    """Pooled embeddings of whole texts by a GGUF model in-process (llama.cpp, last-token pooling,
    L2-normalised): one prefill per text, what the embedding reward head reads."""

    def __init__(self, model: LocalModel, threads: int = default("threads"), n_ctx: int = default("context")) -> None:
        import xllamacpp as xl

        params = server_params(str(model.path), threads, n_ctx)
        params.embedding = True
        params.pooling_type = xl.llama_pooling_type.LLAMA_POOLING_TYPE_LAST  # the turn end, where a reward is read
        self.model = model
        self._server = xl.Server(params)
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            reply = self._server.handle_embeddings({"input": texts})
        if "error" in reply:
            raise LLMUnavailable(f"Embedded model failed to embed: {reply['error']}")
        return [row["embedding"] for row in sorted(reply["data"], key=lambda r: r["index"])]


def embedded_chat(model: LocalModel, cfg: Settings, lora: list[str] | None = None, slots: int = 1) -> EmbeddedChatModel:
    """The catalog model (sampling settings from its entry) in-process, with trained LoRA GGUFs applied."""
    return EmbeddedChatModel(model_name=model.name, model_path=str(model.path), chat_template=model.chat_template,
                             threads=cfg.threads, n_ctx=cfg.context, seed=cfg.seed, repeat_penalty=cfg.repeat_penalty or model.repeat_penalty,
                             stop=list(model.stop), lora=lora or [], repeatable=cfg.repeatable, slots=slots)


@register_backend("embedded")
def _embedded_backend(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> LLM:
    """A catalog GGUF (or `model_file`) in-process through llama.cpp."""
    name, model_file = cfg.model, cfg.model_file
    if name and (name.endswith(".gguf") or Path(name).is_file()):  # --model-file PATH arrives as --model
        name, model_file = None, Path(name)
    try:
        model = local_model(cfg.cache_dir, name, model_file, progress)
    except ModelNotFound as exc:
        raise BadInput(str(exc)) from None
    except ModelError as exc:
        raise LLMUnavailable(str(exc)) from None
    chat = embedded_chat(model, cfg)
    return LLM(model.name, chat, constrained_label, retries=1, context=chat.n_ctx,
               count_tokens=chat.count_tokens, weights=(str(model.path),))
