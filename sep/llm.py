"""LLM backends behind one langchain-core interface (prompt → chat model → parser).

* `server`: any OpenAI-compatible server through langchain-openai; in production `vllm serve`.
  On vLLM the label line is constrained with `extra_body={"structured_outputs": {"regex": ...}}`;
  other servers get free text, which the parser still reads (label on the first line).
* `embedded`: a catalog GGUF (default Qwen2.5-Coder-1.5B-Instruct, see `sep.models`) or any
  `--model-file`, run in-process by xllamacpp (llama.cpp) with a grammar for the label line.
  Chats are rendered with the model's own chat template, as vLLM and transformers would.
* `policy`: what `sep train` produced (`--policy RUN`). A run on a catalog base runs embedded, the
  base GGUF plus the run's llama.cpp LoRA adapter (`sep.adapters`), at the base model's speed; any
  other run (a base given as a folder) runs through transformers.

Both return `AIMessage`s with OpenAI-shaped `response_metadata["logprobs"]`, so one parser
turns either into an `Answer` with a confidence from the label token's log-probabilities.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import BasePromptTemplate
from pydantic import PrivateAttr

from sep.adapters import adapter_folder, read_adapter, run_config
from sep.errors import BadInput, require_extra
from sep.models import CATALOG, DEFAULT_MODEL, LocalModel, ModelError, ModelNotFound, local_model
from sep.settings import Settings, plugins

LABEL_WORDS = {"ko": {"up": "상승", "down": "하락"}, "en": {"up": "Positive", "down": "Negative"}}
_ALIASES = {"상승": "up", "하락": "down", "positive": "up", "negative": "down", "up": "up", "down": "down",
            "rise": "up", "fall": "down"}
HF_DIR_NAMES = {"gemma-270m": "gemma-3-270m-hf"}  # folder names caches already hold; others are <name>-hf


class LLMUnavailable(RuntimeError):
    """The model can't be reached or run; the CLI prints this and exits non-zero."""


# ---------------------------------------------------------------- chat templates


_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def message_dicts(messages: list[BaseMessage]) -> list[dict]:
    """langchain messages as the OpenAI/transformers role dicts chat templates read."""
    return [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """A chat template compiled once (every generation renders one; Qwen's is long)."""
    import json

    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_messages(template: str, messages: list[dict], add_generation_prompt: bool = True,
                    bos_token: str = "", eos_token: str = "") -> str:
    """A chat rendered by a jinja chat template, with the settings transformers uses, so the
    embedded model, `apply_chat_template` and vLLM see the same text. llama.cpp adds BOS itself."""
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                      bos_token=bos_token, eos_token=eos_token)


def _chat_result(text: str, logprobs: Any, model_name: str, tokens_in: int, tokens_out: int,
                 timings: dict | None = None) -> ChatResult:
    """What the local backends return: OpenAI-shaped logprobs and usage, like a server's answer."""
    message = AIMessage(
        content=text.strip(),
        response_metadata={"logprobs": logprobs, "model_name": model_name, "timings": timings},
        usage_metadata={"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


_ANSWER = "\x00sep-answer\x00"


def turn_end_of(template: str) -> str:
    """The text that closes a model turn under this chat template: `<|im_end|>` for ChatML,
    `<end_of_turn>` for Gemma. Read off the template itself (render an answer, see what follows
    it), so no model's marker is written into sep's code."""
    rendered = render_messages(template, [{"role": "user", "content": "q"}, {"role": "assistant", "content": _ANSWER}],
                               add_generation_prompt=False)
    tail = rendered.split(_ANSWER, 1)[-1].lstrip(" ")
    found = re.match(r"<\|[^|>]+\|>|<[^<>\s]+>|</s>", tail)
    if not found:
        raise ModelError("The chat template closes a model turn with no special token; sep can't tell where an "
                         "answer ends (give a base whose tokenizer carries a chat template with an end-of-turn token).")
    return found.group(0)


@dataclass(frozen=True)
class ChatFormat:
    """How a base model's chats look: its template and the token that ends a model turn.

    Training, PPO's stop and missing-EOS check, the reward model's read position and best-of-n
    scoring all use the same `turn_end`, so a response is scored where it was trained to end."""

    template: str
    turn_end: str

    @classmethod
    def of(cls, template: str) -> "ChatFormat":
        return cls(template, turn_end_of(template))

    def prompt(self, prompt: str | list[dict]) -> str:
        """A prompt rendered for generation: plain text becomes one user turn; TRL conversational
        messages, or a stored prediction's chat (JSON, see `Prompt.render`), are rendered as they are."""
        return render_messages(self.template, as_messages(prompt))

    def response(self, text: str | list[dict]) -> str:
        """An answer as it ends in training and scoring: closed by the turn end."""
        text = content_text(text).strip()
        return text if text.endswith(self.turn_end) else text + self.turn_end

    def strip(self, text: str) -> str:
        return text.split(self.turn_end)[0]


def as_messages(prompt: str | list[dict]) -> list[dict]:
    """Any prompt as chat messages: TRL conversational lists, a stored chat (JSON), or plain text (one user turn)."""
    if isinstance(prompt, str) and prompt.startswith("[{"):
        try:
            prompt = json.loads(prompt)
        except ValueError:
            pass
    if isinstance(prompt, list):
        return [{"role": m.get("role", "user"), "content": m["content"]} for m in prompt]
    return [{"role": "user", "content": prompt}]


def content_text(value: str | list[dict]) -> str:
    if isinstance(value, list):  # conversational completion: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in value)
    return value


# ---------------------------------------------------------------- parsing


@dataclass
class Answer:
    """One explain trial: label up/down (None if unparsable, counted wrong), why, how sure."""

    label: str | None
    explanation: str
    confidence: float | None
    response: str
    flags: list[str] = field(default_factory=list)  # sep.quality's findings; any flag makes it unparsable


def parse_label(line: str) -> str | None:
    """The label named on a line, or None when it names none or both."""
    words = re.findall(r"[가-힣]+|[A-Za-z]+", line.lower())
    found = {_ALIASES[w] for w in words if w in _ALIASES}
    return found.pop() if len(found) == 1 else None


def parse_answer(message: AIMessage | str, lang: str = "ko") -> Answer:
    """First non-empty line holds the label; the rest is the explanation. Never raises."""
    text = message if isinstance(message, str) else str(message.content)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    label = parse_label(lines[0].strip("*#:. ")) if lines else None
    explanation = "\n".join(lines[1:] if label else lines).strip()
    meta = {} if isinstance(message, str) else message.response_metadata
    confidence = label_confidence(meta.get("logprobs"), label, lang) if label else None
    return Answer(label, explanation, confidence, text.strip())


def label_confidence(logprobs: Any, label: str, lang: str) -> float | None:
    """P(chosen label) against the other, from the first generated token's top log-probs.

    If the other label's first token is not among the top candidates, its probability is
    taken as the smallest listed one (so the confidence errs low, never high).
    """
    try:
        first = logprobs["content"][0]
    except (TypeError, KeyError, IndexError):
        return None
    words = LABEL_WORDS[lang]
    chosen_word, other_word = words[label], words["down" if label == "up" else "up"]
    candidates = [(c["token"].strip(), c["logprob"]) for c in first.get("top_logprobs") or []]
    candidates.append((first["token"].strip(), first["logprob"]))

    def best(word: str) -> float | None:
        lps = [lp for tok, lp in candidates if tok and word.lower().startswith(tok.lower())]
        return max(lps) if lps else None

    lp_chosen, lp_other = best(chosen_word), best(other_word)
    if lp_chosen is None:
        return None
    if lp_other is None:
        lp_other = min(lp for _, lp in candidates)
    return 1.0 / (1.0 + math.exp(lp_other - lp_chosen))


# ---------------------------------------------------------------- embedded model


def server_params(model_path: str, threads: int, n_ctx: int) -> Any:
    """llama.cpp's settings for one in-process model: one slot, quiet, no warm-up."""
    import xllamacpp as xl

    params = xl.CommonParams()
    params.model.path = model_path
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    params.verbosity = -1
    return params


class EmbeddedChatModel(BaseChatModel):
    """A local GGUF in-process through xllamacpp. `label_words=(up, down)` constrains the first line.

    Sampling settings (repetition penalty, stop strings) come from the model's catalog entry.
    """

    model_name: str
    model_path: str
    chat_template: str
    threads: int = 2
    n_ctx: int = 4096
    seed: int = 0
    temperature: float = 0.0
    max_tokens: int = 200
    repeat_penalty: float = 1.0
    stop: list[str] = []
    lora: list[str] = []  # llama.cpp LoRA GGUFs applied on the base, in order (a trained policy)
    _server: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "sep-embedded-llamacpp"

    def _ensure_server(self) -> Any:
        if self._server is None:
            import xllamacpp as xl

            params = server_params(self.model_path, self.threads, self.n_ctx)
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

    def _complete(self, prompt: str, **request: Any) -> dict:
        result = self._ensure_server().handle_completions({"prompt": prompt, "seed": self.seed, **request})
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
        head, logprobs, usage_in, usage_out = "", None, 0, 0
        label_words = kwargs.get("label_words")
        if label_words:
            grammar = "root ::= " + " | ".join(f'"{w}"' for w in label_words)
            first = self._complete(prompt, max_tokens=8, grammar=grammar, n_probs=50, temperature=temperature, seed=seed)
            head = first["choices"][0]["text"].strip() + "\n"
            logprobs = first["choices"][0].get("logprobs")
            usage_in += first["usage"]["prompt_tokens"]
            usage_out += first["usage"]["completion_tokens"]
        rest = self._complete(prompt + head, max_tokens=max_tokens, **sampling)
        usage_in += rest["usage"]["prompt_tokens"]
        usage_out += rest["usage"]["completion_tokens"]
        return _chat_result(head + rest["choices"][0]["text"], logprobs, self.model_name, usage_in, usage_out,
                            rest.get("timings"))


class GGUFEncoder:
    """Pooled embeddings of whole texts by a GGUF model in-process (llama.cpp, last-token pooling,
    L2-normalised): one prefill per text, what the embedding reward head reads."""

    def __init__(self, model: LocalModel, threads: int = 2, n_ctx: int = 4096) -> None:
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


# ---------------------------------------------------------------- transformers (training and policies)


def _need_train_extra(exc: ImportError) -> LLMUnavailable:
    return LLMUnavailable(f"This needs the training extra ({exc.name} is missing): pip install -e '.[train]'")


def hf_dir(cache_dir: Path, name: str) -> Path:
    """Where a catalog model's de-quantized transformers folder lives in the cache."""
    return Path(cache_dir) / "models" / HF_DIR_NAMES.get(name, f"{name}-hf")


def prepare_hf_model(cache_dir: Path, progress: Callable[[int, int], None] | None = None,
                     name: str = DEFAULT_MODEL) -> Path:
    """De-quantize a catalog GGUF once into a transformers folder (fp32, trainable); return it.

    The trainers learn on it, and `bench/vllm_cpu.sh` serves it, so vLLM and a trained adapter
    see exactly the weights and chat template that run embedded. transformers reads GGUF slowly
    (a minute or two here), so the folder is cached, written under a temporary name and renamed:
    an interrupted run never leaves half a model.
    """
    target = hf_dir(cache_dir, name)
    if (target / "config.json").exists():
        return target
    try:
        local = local_model(cache_dir, name, progress=progress)  # the GGUF and its chat template
    except ModelError as exc:
        raise LLMUnavailable(str(exc)) from None
    gguf = local.path
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise _need_train_extra(exc) from None
    import shutil

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.chat_template = local.chat_template  # the one embedded inference renders with
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # a GGUF-loaded model refuses to save with these two set
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def base_model_folder(cache_dir: Path, base_model: str | Path,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """The transformers folder of a base model (TRL's `model_name_or_path`): a catalog name,
    de-quantized once from its GGUF, or a folder holding an HF model, used as it is."""
    name = str(base_model)
    if name in CATALOG:
        return prepare_hf_model(cache_dir, progress, name)
    folder = Path(base_model)
    if not (folder / "config.json").is_file():
        raise BadInput(f"--base-model {name} is neither a catalog name ({', '.join(CATALOG)}) nor a folder holding "
                       "a transformers model (config.json).")
    return folder


def chat_format(folder: Path) -> ChatFormat:
    """A base model folder's chat format, from its tokenizer's chat template; one sentence when it has none."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise _need_train_extra(exc) from None
    template = AutoTokenizer.from_pretrained(folder).chat_template
    if not isinstance(template, str) or not template.strip():
        raise BadInput(f"{folder} has no chat template in its tokenizer; sep trains and answers in chat turns, so "
                       "give an instruction-tuned model (or set tokenizer.chat_template).")
    try:
        return ChatFormat.of(template)
    except ModelError as exc:
        raise BadInput(f"{folder}: {exc}") from None


def run_data_end(path: Path | None) -> str | None:
    """The last day a `sep train` run may have seen an outcome of (its `data_end`), if it recorded one."""
    return run_config(path).get("data_end")


def load_causal_lm(policy: Path | None, base: Path, threads: int) -> tuple[Any, Any]:
    """(model, tokenizer) for a policy on `base`: a LoRA adapter (a run folder), a full model folder, or the base.

    PPO and GRPO runs trained their LoRA on top of a merged SFT run; that one is merged first."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise _need_train_extra(exc) from None

    torch.set_num_threads(threads)
    adapter = adapter_folder(policy) if policy is not None else None
    if adapter is not None:
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base)
        sft = run_config(policy).get("sft")
        if sft and adapter_folder(Path(sft)) is not None:
            model = PeftModel.from_pretrained(model, adapter_folder(Path(sft))).merge_and_unload()
        model = PeftModel.from_pretrained(model, adapter)
        tok_dir = adapter if (adapter / "tokenizer_config.json").exists() else base
    else:
        folder = policy or base
        if not (Path(folder) / "config.json").exists():
            raise BadInput(f"--policy {policy} holds neither config.json nor adapter_config.json.")
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok_dir = folder
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    model.eval()
    return model, tokenizer


class TransformersChatModel(BaseChatModel):
    """A transformers causal LM (a trained policy on a base given as a folder) behind the chat interface.

    With `label_words=(up, down)` the label is chosen by scoring both words after the prompt (so it
    is always one of them) and the two log-probabilities are returned OpenAI-style, which gives the
    same confidence as the other backends; the explanation is then generated after it. Chats are
    rendered with the tokenizer's own template and generation stops at its turn end.
    """

    policy: str | None = None
    base: str
    threads: int = 2
    seed: int = 0
    temperature: float = 0.0
    max_tokens: int = 200
    repeat_penalty: float = 1.0
    stop: list[str] = []
    _loaded: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "sep-transformers"

    def _ensure(self) -> tuple[Any, Any, ChatFormat]:
        if self._loaded is None:
            model, tok = load_causal_lm(Path(self.policy) if self.policy else None, Path(self.base), self.threads)
            self._loaded = (model, tok, ChatFormat.of(tok.chat_template))
        return self._loaded

    def _score_words(self, prompt: str, words: tuple[str, ...]) -> list[float]:
        """log P(word | prompt) for each word, summed over its tokens."""
        import torch

        model, tok, _ = self._ensure()
        prompt_ids = tok(prompt, return_tensors="pt").input_ids  # with BOS where the model has one, as llama.cpp does
        scores = []
        for word in words:
            word_ids = tok(word, add_special_tokens=False, return_tensors="pt").input_ids
            ids = torch.cat([prompt_ids, word_ids], dim=1)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, prompt_ids.shape[1] - 1:-1]
            lp = torch.log_softmax(logits.float(), dim=-1).gather(1, word_ids[0].unsqueeze(1)).sum()
            scores.append(float(lp))
        return scores

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        import torch

        model, tok, fmt = self._ensure()
        prompt = render_messages(fmt.template, message_dicts(messages))
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        seed = kwargs.get("seed", self.seed)  # best-of-n varies it per sample
        stop = [s for s in self.stop if not s.startswith("<")] + list(stop or [])  # the catalog's plain-text stops
        generator = torch.Generator().manual_seed(seed)
        head, logprobs = "", None
        label_words = kwargs.get("label_words")
        if label_words:
            scores = self._score_words(prompt, tuple(label_words))
            if temperature and temperature > 0:
                probs = torch.softmax(torch.tensor(scores) / temperature, dim=0)
                pick = int(torch.multinomial(probs, 1, generator=generator))
            else:
                pick = max(range(len(scores)), key=scores.__getitem__)
            head = label_words[pick] + "\n"
            logprobs = {"content": [{"token": label_words[pick], "logprob": scores[pick],
                                     "top_logprobs": [{"token": w, "logprob": s} for w, s in zip(label_words, scores)]}]}
        ids = tok(prompt + head, return_tensors="pt").input_ids
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=bool(temperature and temperature > 0),
                                 temperature=temperature if temperature else None, top_p=None, top_k=None,
                                 repetition_penalty=self.repeat_penalty, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                                 eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(fmt.turn_end)],
                                 **({"stop_strings": stop, "tokenizer": tok} if stop else {}))
        new = out[0, ids.shape[1]:]
        text = fmt.strip(tok.decode(new, skip_special_tokens=False))
        for s in stop:
            text = text.split(s)[0]
        text = tok.decode(tok(text, add_special_tokens=False).input_ids, skip_special_tokens=True)
        return _chat_result(head + text, logprobs, self.policy or self.base, int(ids.shape[1]), int(new.shape[0]))


# ---------------------------------------------------------------- the facade the agents use


@dataclass
class LLM:
    """A chat model plus how to ask it for a constrained answer, with call/token counters."""

    name: str
    chat: BaseChatModel
    answer_binding: Callable[[str, str], dict]  # (up word, down word) -> kwargs for .bind()
    retries: int = 3
    data_end: str | None = None  # a trained policy's last training day (see `run_data_end`)
    context: int | None = None  # tokens the model can read and write; None: unknown (no budget check)
    count_tokens: Callable[[list[dict]], int] | None = None  # chat messages -> tokens, by the model's tokenizer
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # batch jobs ask from many threads

    def prompt_tokens_of(self, template: BasePromptTemplate, variables: dict) -> int | None:
        """How many tokens this prompt is for this model; None when the model can't say."""
        if self.count_tokens is None:
            return None
        return self.count_tokens(message_dicts(template.format_messages(**variables)))

    def ask(self, template: BasePromptTemplate, variables: dict, *, label_words: tuple[str, str] | None = None,
            max_tokens: int = 200, temperature: float | None = None, stop: list[str] | None = None,
            seed: int | None = None) -> AIMessage:
        """prompt → model; retried with exponential backoff on connection errors and timeouts."""
        from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

        kwargs: dict[str, Any] = {"max_tokens": max_tokens}
        if stop:
            kwargs["stop"] = stop
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        if label_words:
            kwargs.update(self.answer_binding(*label_words))
        chain = template | self.chat.bind(**kwargs)

        @retry(stop=stop_after_attempt(self.retries), wait=wait_exponential(multiplier=0.5, max=20),
               retry=retry_if_exception(_is_transient), reraise=True)
        def call() -> AIMessage:
            return chain.invoke(variables)

        try:
            message = call()
        except Exception as exc:
            if _is_transient(exc) or isinstance(exc, LLMUnavailable):
                raise LLMUnavailable(f"The model at {self.name} did not answer after {self.retries} attempts: "
                                     f"{type(exc).__name__}: {exc}") from None
            raise
        usage = message.usage_metadata or {}
        with self._lock:
            self.calls += 1
            self.prompt_tokens += usage.get("input_tokens", 0)
            self.completion_tokens += usage.get("output_tokens", 0)
        return message


def _is_transient(exc: BaseException) -> bool:
    try:
        import openai
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                            openai.RateLimitError))


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


# ---------------------------------------------------------------- mock (scripted, in-process)

Script = Callable[[str, str], str]  # (agent: summarize | explain | reflect | judge, last user message) -> reply
AGENTS = ("summarize", "explain", "reflect", "judge")


@functools.lru_cache(maxsize=1)
def _system_openings() -> tuple[tuple[str, str], ...]:
    """(the fixed opening of its system message, agent) for every packaged prompt, read once."""
    from sep.agents import load_prompt

    found = ((load_prompt(lang, name).system.strip().split("{")[0], name)  # the text before any variable
             for lang in ("ko", "en") for name in AGENTS)
    return tuple((opening, name) for opening, name in found if opening)


def agent_of(messages: list[dict]) -> str:
    """Which agent wrote a chat, recognised by its system message (the packaged prompts, ko or en)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "").strip()
    return next((name for opening, name in _system_openings() if system.startswith(opening)), "explain")


def default_script(agent: str, prompt: str) -> str:
    """What the mock answers unless told otherwise: cite the first texts, explain with the first
    summary's words, a short lesson, middling judge scores. Deterministic, so tests can rely on it."""
    if agent == "summarize":
        found = re.findall(r"^\[(\d+)\] (.+)$", prompt, flags=re.M)[:3]
        return "\n".join(f"- {title} [{n}]" for n, title in found) or "- (정보 없음)"
    if agent == "reflect":
        return "요약의 가장 큰 소식보다 시장 전체의 흐름을 먼저 봤어야 했다."
    if agent == "judge":
        return json.dumps({"relevance": 4, "clarity": 4, "consistency": 4})
    from sep.agents import strip_citations

    line = next((ln for ln in prompt.splitlines() if ln.startswith("[20")), "")
    words = strip_citations(re.sub(r"^\[[\d-]+\]\s*-?\s*", "", line)).split()[:6]
    return f"상승\n{' '.join(words) or '새 소식'} 소식이 주가를 움직일 것이다."


class MockChatModel(BaseChatModel):
    """Scripted answers in-process: agents, batches, best-of-n and the judge run without a model or HTTP.

    `script(agent, prompt)` returns the reply; with `label_words` its first line is forced to one
    of them (the first when the script names neither), with probability `p_label`.
    """

    script: Any = None  # Script | None: default_script
    p_label: float = 0.6
    calls: list[dict] = []

    @property
    def _llm_type(self) -> str:
        return "sep-mock"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        chat = message_dicts(messages)
        agent = agent_of(chat)
        text = (self.script or default_script)(agent, chat[-1]["content"])
        self.calls.append({"agent": agent, "messages": chat, **{k: v for k, v in kwargs.items() if k != "label_words"}})
        logprobs = None
        words = kwargs.get("label_words")
        if words:
            first, _, rest = text.partition("\n")
            label = first.strip() if first.strip() in words else words[0]
            text = f"{label}\n{rest if first.strip() in words else text}"
            other = words[1] if label == words[0] else words[0]
            logprobs = {"content": [{"token": label, "logprob": math.log(self.p_label), "top_logprobs": [
                {"token": label, "logprob": math.log(self.p_label)},
                {"token": other, "logprob": math.log(1 - self.p_label)}]}]}
        tokens_in = sum(len(m["content"]) for m in chat) // 2
        return _chat_result(text, logprobs, "mock", tokens_in, len(text) // 2)


def mock_llm(script: Script | None = None, p_label: float = 0.6) -> "LLM":
    """An LLM whose answers come from `script(agent, prompt)` (default: `default_script`)."""
    chat = MockChatModel(script=script, p_label=p_label, calls=[])
    return LLM("mock", chat, lambda up, down: {"label_words": (up, down)}, retries=1)


# ---------------------------------------------------------------- backends by name

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


@register_backend("mock")
def _mock_backend(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> "LLM":
    return mock_llm()


def make_llm(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> LLM:
    """The backend `cfg.backend` names; unset: the server at `base_url`, else a trained `policy`,
    else the embedded model (prepared on first use)."""
    name = cfg.backend or ("openai" if cfg.base_url else "policy" if cfg.policy else "embedded")
    factory = backends().get(name)
    if factory is None:
        raise BadInput(f"Unknown backend '{name}': choose one of {', '.join(sorted(backends()))}.")
    return factory(cfg, progress)


@register_backend("openai")
def _openai_backend(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> LLM:
    """An OpenAI-compatible server (vLLM constrains the label with structured outputs)."""
    if not cfg.base_url:
        raise BadInput("The openai backend needs a server: pass --base-url (or SEP_BASE_URL).")
    from langchain_openai import ChatOpenAI

    ids, is_vllm = probe_server(cfg.base_url, cfg.api_key, cfg.timeout)
    model = served_policy(cfg.policy, ids, cfg.base_url) if cfg.policy else cfg.model or (ids[0] if ids else None)
    if not model:
        raise LLMUnavailable(f"The server at {cfg.base_url} lists no models; pass --model NAME.")
    # vLLM takes llama.cpp's repetition penalty too; unset, the server's default (1.0) applies.
    vllm_body = {"repetition_penalty": cfg.repeat_penalty} if is_vllm and cfg.repeat_penalty else {}
    chat = ChatOpenAI(base_url=cfg.base_url, api_key=cfg.api_key, model=model, timeout=cfg.timeout,
                      max_retries=0, temperature=0.0, seed=cfg.seed, logprobs=True, top_logprobs=5,
                      extra_body=vllm_body or None)

    def binding(up: str, down: str) -> dict:
        if not is_vllm:
            return {}
        return {"extra_body": {**vllm_body, "structured_outputs": {"regex": f"({up}|{down})\\n[\\s\\S]*"}}}

    context, counter = server_tokenizer(cfg.base_url, model, cfg.api_key, cfg.timeout) if is_vllm else (None, None)
    return LLM(f"{model}@{cfg.base_url}", chat, binding, retries=cfg.retries, context=context, count_tokens=counter,
               data_end=run_data_end(cfg.policy) if cfg.policy else None)


@register_backend("policy")
def _policy_backend(cfg: Settings, progress: Callable[[int, int], None] | None = None) -> LLM:
    """A trained policy (`--policy RUN`). On a catalog base it runs embedded: the base GGUF plus the
    run's llama.cpp adapter (and its SFT run's, which PPO/GRPO trained on top of). A run on a base
    given as a folder runs through transformers."""
    if not cfg.policy:
        raise BadInput("The policy backend needs --policy RUN.")
    if not Path(cfg.policy).is_dir():
        raise BadInput(f"--policy {cfg.policy} is not a folder with a `sep train` run or a LoRA adapter.")
    if adapter_folder(cfg.policy) is None and (Path(cfg.policy) / "config.json").exists():  # a whole model folder
        return _transformers_policy(cfg, None, Path(cfg.policy))
    adapters = [read_adapter(cfg.policy)]  # one sentence for a corrupt or truncated adapter, before any model loads
    sft = run_config(cfg.policy).get("sft")
    if sft:
        adapters.insert(0, read_adapter(Path(sft)))
    base = adapters[-1].base_model
    if cfg.model and base and cfg.model != base:
        raise BadInput(f"--policy {cfg.policy} was trained on {base}; it can't run on --model {cfg.model}.")
    if base in CATALOG and all(a.gguf for a in adapters):
        try:
            model = local_model(cfg.cache_dir, base, progress=progress)
        except ModelError as exc:
            raise LLMUnavailable(str(exc)) from None
        chat = embedded_chat(model, cfg, lora=[str(a.gguf) for a in adapters])
        return LLM(f"policy:{cfg.policy}", chat, lambda up, down: {"label_words": (up, down)}, retries=1,
                   context=chat.n_ctx, count_tokens=chat.count_tokens, data_end=run_data_end(cfg.policy))
    return _transformers_policy(cfg, base, base_model_folder(cfg.cache_dir, base or _peft_base(adapters[-1].folder),
                                                            progress))


def _transformers_policy(cfg: Settings, base: str | None, folder: Path) -> LLM:
    """A policy through transformers: a run on a base given as a folder, or a whole model folder."""
    require_extra("train", "--policy")
    spec = CATALOG.get(str(base))
    chat = TransformersChatModel(policy=str(cfg.policy) if base or folder != Path(cfg.policy) else None,
                                 base=str(folder), threads=cfg.threads, seed=cfg.seed,
                                 repeat_penalty=cfg.repeat_penalty or (spec.repeat_penalty if spec else 1.0),
                                 stop=list(spec.stop) if spec else [])
    chat._ensure()  # fail now, with a clear message, rather than at the first prompt
    return LLM(f"policy:{cfg.policy}", chat, lambda up, down: {"label_words": (up, down)}, retries=1,
               data_end=run_data_end(cfg.policy))


def _peft_base(adapter: Path) -> str:
    """The base a PEFT adapter names (`base_model_name_or_path`) when no sep run recorded one."""
    return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or DEFAULT_MODEL


def served_policy(policy: Path | str, served: list[str], base_url: str) -> str:
    """The model id to send for `--policy NAME --base-url URL`: the LoRA module the server lists
    under that name (or under a run folder's name, e.g. runs/sft → sft); one sentence otherwise."""
    for candidate in (str(policy), Path(policy).name):
        if candidate in served:
            return candidate
    raise BadInput(f"The server at {base_url} lists no model {policy} (it lists {', '.join(served) or 'none'}); "
                           f"serve the adapter with `vllm serve BASE --enable-lora --lora-modules "
                           f"{Path(policy).name}=runs/{Path(policy).name}/adapter`.")


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
    return LLM(model.name, chat, lambda up, down: {"label_words": (up, down)}, retries=1, context=chat.n_ctx,
               count_tokens=chat.count_tokens)


def server_tokenizer(base_url: str, model: str, api_key: str, timeout: float
                     ) -> tuple[int | None, Callable[[list[dict]], int] | None]:
    """(context, token counter) from vLLM's /tokenize (its chat template, its tokenizer); (None, None) if absent."""
    import httpx

    url = base_url.rstrip("/").removesuffix("/v1") + "/tokenize"
    headers = {"Authorization": f"Bearer {api_key}"}

    def count(messages: list[dict]) -> dict:
        reply = httpx.post(url, json={"model": model, "messages": messages}, headers=headers, timeout=timeout)
        reply.raise_for_status()
        return reply.json()

    try:
        probe = count([{"role": "user", "content": "ping"}])
    except (httpx.HTTPError, ValueError):
        return None, None
    if not isinstance(probe, dict) or "count" not in probe:
        return None, None
    return probe.get("max_model_len"), lambda messages: int(count(messages)["count"])


def embedded_chat(model: LocalModel, cfg: Settings, lora: list[str] | None = None) -> EmbeddedChatModel:
    """The catalog model (sampling settings from its entry) in-process, with trained LoRA GGUFs applied."""
    return EmbeddedChatModel(model_name=model.name, model_path=str(model.path), chat_template=model.chat_template,
                             threads=cfg.threads, n_ctx=cfg.context, seed=cfg.seed, repeat_penalty=cfg.repeat_penalty or model.repeat_penalty,
                             stop=list(model.stop), lora=lora or [])
