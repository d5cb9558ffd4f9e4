"""The policy backend: what `sep train` produced (`--policy RUN`), and the transformers side of models.

A run on a catalog base runs embedded, the base GGUF plus the run's llama.cpp LoRA adapter
(`sep.adapters`), at the base model's speed; any other run (a base given as a folder, or a whole
model folder) runs through transformers (`TransformersChatModel`, the train extra). The
trainers find their base model here too (`prepare_hf_model`, `base_model_folder`, `chat_format`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from sep.adapters import adapter_folder, read_adapter, run_config, run_data_end
from sep.backends.embedded import embedded_chat
from sep.backends.registry import register_backend
from sep.errors import BadInput, extra_error, require_extra
from sep.llm import LLM, ChatFormat, LLMUnavailable, chat_result, message_dicts, render_messages
from sep.shapes import LessonShape, constrained_label
from sep.models import CATALOG, DEFAULT_MODEL, LocalModel, ModelError, local_model, made_once
from sep.settings import Settings, default, evidence_tokens

HF_DIR_NAMES = {"gemma-270m": "gemma-3-270m-hf"}  # folder names caches already hold; others are <name>-hf


def _need_train_extra(exc: ImportError) -> BadInput:
    return extra_error("train", "This", exc.name)


def hf_dir(cache_dir: Path, name: str) -> Path:
    """Where a catalog model's de-quantized transformers folder lives in the cache."""
    return Path(cache_dir) / "models" / HF_DIR_NAMES.get(name, f"{name}-hf")


def prepare_hf_model(cache_dir: Path, progress: Callable[[int, int], None] | None = None,
                     name: str = DEFAULT_MODEL) -> Path:
    """De-quantize a catalog GGUF once into a transformers folder (fp32, trainable); return it.

    The trainers learn on it, and `bench/vllm_cpu.sh` serves it, so vLLM and a trained adapter
    see exactly the weights and chat template that run embedded. transformers reads GGUF slowly
    (a minute or two here), so the folder is cached, written under a temporary name and renamed:
    an interrupted run never leaves half a model. A file lock makes a second process wait for the
    first's folder instead of converting it again.
    """
    target = hf_dir(cache_dir, name)
    if (target / "config.json").exists():
        return target
    with made_once(target):
        return _convert(cache_dir, name, target, progress)


def _convert(cache_dir: Path, name: str, target: Path, progress: Callable[[int, int], None] | None) -> Path:
    """The conversion itself, under the lock."""
    if (target / "config.json").exists():  # done by the process that held the lock before us
        return target
    try:
        local = local_model(cache_dir, name, progress=progress)  # the GGUF and its chat template
    except ModelError as exc:
        raise LLMUnavailable(str(exc)) from None
    gguf = local.path
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise _need_train_extra(exc) from None
    import shutil

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with _one_gguf_parse():
        tokenizer = gguf_tokenizer(local)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # a GGUF-loaded model refuses to save with these two set
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def gguf_tokenizer(local: LocalModel) -> Any:
    """A catalog model's tokenizer, read off its GGUF, with the chat template embedded inference
    renders with: what a de-quantized folder (and a test's tokenizer folder) is saved with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(local.path.parent), gguf_file=local.path.name)
    tokenizer.chat_template = local.chat_template
    return tokenizer


@contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """transformers reads a GGUF's metadata three times (config, tokenizer, weights), and reading a
    150k-token vocabulary is slow in pure Python: read it once; and de-quantize from plain arrays."""
    import gguf
    import numpy as np

    original, dequantize = gguf.GGUFReader, gguf.dequantize
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:  # read only: one object serves every caller
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    def plain(data: Any, qtype: Any) -> Any:  # from memory: on the memory map each 16-row slice costs a view
        return dequantize(np.array(data), qtype)  # (measured: 40 tensors of the 1.5B in 6.3 s, not 11.1 s)

    gguf.GGUFReader, gguf.dequantize = reader, plain
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.dequantize = original, dequantize


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


def _saved_chat_template(folder: Path) -> str | None:
    """The chat template as transformers saves it (chat_template.jinja, chat_template.json or the
    tokenizer config), read without loading the tokenizer (seconds for a 150k-262k vocabulary)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = json.loads((folder / name).read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, list):  # named templates: the default one
                template = next((t.get("template") for t in template if t.get("name") == "default"), None)
            if isinstance(template, str):
                return template
    return None


def chat_format(folder: Path) -> ChatFormat:
    """A base model folder's chat format, from its tokenizer's chat template; one sentence when it has none."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise _need_train_extra(exc) from None
    template = _saved_chat_template(Path(folder))
    if template is None:  # a layout of its own: let transformers find it (a full tokenizer load)
        template = AutoTokenizer.from_pretrained(folder).chat_template
    if not isinstance(template, str) or not template.strip():
        raise BadInput(f"{folder} has no chat template in its tokenizer; sep trains and answers in chat turns, so "
                       "give an instruction-tuned model (or set tokenizer.chat_template).")
    try:
        return ChatFormat.of(template)
    except ModelError as exc:
        raise BadInput(f"{folder}: {exc}") from None


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

    With an `answer_shape` the label is chosen by scoring both words after the prompt (so it
    is always one of them) and the two log-probabilities are returned OpenAI-style, which gives the
    same confidence as the other backends; the explanation is then generated after it. Chats are
    rendered with the tokenizer's own template and generation stops at its turn end.
    """

    policy: str | None = None
    base: str
    threads: int = default("threads")
    seed: int = default("seed")
    temperature: float = 0.0  # greedy unless a call samples
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
        shape = kwargs.get("answer_shape")
        if isinstance(shape, LessonShape):  # not held here (no grammar): the parser reads what it can
            shape = None
        label_words, after = (shape.words, shape.after) if shape else (None, "")
        if label_words and after:  # evidence first: generate the items up to the label marker, then choose the label
            head = self._generate_text(model, tok, fmt, prompt, evidence_tokens(max_tokens), temperature, seed,
                                       [*stop, after])
            head = head.rstrip() + "\n" + after + " "
            fixed = shape.fixed_label(head)  # derived: the evidence written fixes the label
            label_words = (fixed,) if fixed else label_words
        if label_words:
            scores = self._score_words(prompt + head, tuple(label_words))
            if temperature and temperature > 0:
                probs = torch.softmax(torch.tensor(scores) / temperature, dim=0)
                pick = int(torch.multinomial(probs, 1, generator=generator))
            else:
                pick = max(range(len(scores)), key=scores.__getitem__)
            head += label_words[pick] + "\n"
            logprobs = {"content": [{"token": label_words[pick], "logprob": scores[pick],
                                     "top_logprobs": [{"token": w, "logprob": s} for w, s in zip(label_words, scores)]}]}
        text = self._generate_text(model, tok, fmt, prompt + head, max_tokens, temperature, seed, stop)
        tokens_in = len(tok(prompt, add_special_tokens=False).input_ids)
        return chat_result(head + text, logprobs, self.policy or self.base, tokens_in,
                            len(tok(head + text, add_special_tokens=False).input_ids))

    def _generate_text(self, model: Any, tok: Any, fmt: ChatFormat, prompt: str, max_tokens: int,
                       temperature: float | None, seed: int, stop: list[str]) -> str:
        """Sampled (or greedy) text after `prompt`, cut at the turn end and the first stop string."""
        import torch

        ids = tok(prompt, return_tensors="pt").input_ids
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=bool(temperature and temperature > 0),
                                 temperature=temperature if temperature else None, top_p=None, top_k=None,
                                 repetition_penalty=self.repeat_penalty, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                                 eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(fmt.turn_end)],
                                 **({"stop_strings": stop, "tokenizer": tok} if stop else {}))
        text = fmt.strip(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False))
        for s in stop:
            text = text.split(s)[0]
        return tok.decode(tok(text, add_special_tokens=False).input_ids, skip_special_tokens=True)


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
        return LLM(f"policy:{cfg.policy}", chat, constrained_label, retries=1,
                   context=chat.n_ctx, count_tokens=chat.count_tokens, data_end=run_data_end(cfg.policy),
                   weights=(str(model.path), *(str(a.gguf) for a in adapters)))
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
    return LLM(f"policy:{cfg.policy}", chat, constrained_label, retries=1,
               data_end=run_data_end(cfg.policy))


def _peft_base(adapter: Path) -> str:
    """The base a PEFT adapter names (`base_model_name_or_path`) when no sep run recorded one."""
    return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or DEFAULT_MODEL
