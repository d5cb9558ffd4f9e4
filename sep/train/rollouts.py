"""GRPO's rollouts through llama.cpp (`--rollouts llama.cpp`): the base's GGUF with the policy's current
LoRA as a GGUF adapter, rewritten after each update.

On 2 cores transformers' `generate` on the fp32 training weights runs at about 3 tok/s and llama.cpp
at 19-22 on the quantized base (issue 34). TRL's GRPOTrainer takes a `rollout_func` for this; the
completions it returns are the token ids llama.cpp sampled (the same vocabulary), or their text
tokenized again where llama.cpp reports no ids (`sampled_ids`, and answers through the grammar), and
the loss is computed by the trainer on its own weights. The difference between the quantized sampler
and the fp32 learner is the price; `bench/train_speed.py` prints both paths, `bench/grpo_signal.py`
the groups that carry a signal.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.messages import convert_to_messages

from sep.adapters import gguf_arch, read_adapter, write_gguf_adapter
from sep.evidence import stored_answer_shape
from sep.backends.embedded import EmbeddedChatModel, embedded_chat
from sep.errors import BadInput
from sep.llm import ChatFormat, as_messages
from sep.shapes import AnswerShape
from sep.models import CATALOG, local_model
from sep.prompting import load_prompt, prompt_files
from sep.settings import Settings
from sep.stances import detect_lang
from sep.train.base import TrainingBase, cpu_only, launch_rank, over_processes
from sep.window import lang_of


def rollout_sampler(settings: Settings, base: TrainingBase, threads: int,
                    slots: int = 1) -> Callable[[list[str]], EmbeddedChatModel]:
    """The embedded model rollouts sample from, given its adapters: a catalog base's packaged GGUF (with its
    catalog sampling settings, as inference uses it), or FOLDER.gguf beside a folder base; `slots`
    completions decoded at once."""
    cfg = settings.model_copy(update={"threads": threads})
    if base.name in CATALOG:
        local = local_model(settings.cache_dir, base.name)
        return lambda lora: embedded_chat(local, cfg, lora, slots)
    beside = Path(base.folder).with_suffix(".gguf")
    if not runs_in_llama_cpp(base):
        raise BadInput(f"--rollouts llama.cpp samples from the base as a GGUF: use a catalog --base-model "
                       f"({', '.join(CATALOG)}), or put {beside.name} beside {Path(base.folder).name}.")
    return lambda lora: EmbeddedChatModel(model_name=base.name, model_path=str(beside), chat_template=base.fmt.template,
                                          threads=threads, n_ctx=cfg.context, seed=cfg.seed, lora=lora,
                                          slots=slots)


def runs_in_llama_cpp(base: TrainingBase) -> bool:
    """llama.cpp can sample the base: a catalog model has its packaged GGUF, a folder needs FOLDER.gguf beside it."""
    return base.name in CATALOG or Path(base.folder).with_suffix(".gguf").exists()


def rollouts_where(asked: str, base: TrainingBase) -> str:
    """`--rollouts auto` resolved: llama.cpp when training on the CPU, where it samples about 3x faster
    than transformers and holds an explain prompt's answer to the inference grammar, and the base runs
    there (a catalog GGUF, or FOLDER.gguf beside the folder, of an architecture sep writes adapters for)."""
    if asked != "auto":
        return asked
    try:
        gguf_arch(base.folder)
    except BadInput:
        return "transformers"
    return "llama.cpp" if cpu_only() and runs_in_llama_cpp(base) else "transformers"


def answer_shapes(rows: list[dict], fmt: ChatFormat, settings: Settings) -> dict[str, tuple[list[dict], AnswerShape]]:
    """Rendered prompt → (its chat, the shape its answer is held to) for the rows that are explain prompts
    (they show the window's items); the language is the stock's, else read off the prompt."""
    explain = {lang: load_prompt(lang, prompt_files(settings.explain_format)["explain"], settings.prompts)
               for lang in ("ko", "en")}
    out = {}
    for r in rows:
        messages = as_messages(r["prompt"])
        lang = lang_of(r["stock"]) if r.get("stock") else detect_lang(messages[-1]["content"])
        shape = stored_answer_shape(messages, lang, explain[lang])
        if shape is not None:
            out[fmt.prompt(r["prompt"])] = (messages, shape)
    return out


def sampled_ids(reply: dict, tok: Any, turn_end_id: int) -> tuple[list[int], list[float]]:
    """A completion's token ids and their log-probs, ending at the turn end when the turn ended.

    llama.cpp lists each sampled token with its id, except where a token ends inside a character
    (a sampled byte of a Hangul syllable): it reports that character once, under one id. When the
    list is short of the tokens sampled, the text (always whole) is tokenized again instead; the
    learner computes its own log-probs of whichever ids it is given."""
    choice = reply["choices"][0]
    sampled = (choice.get("logprobs") or {}).get("content") or []
    ids, logps = [t["id"] for t in sampled], [t["logprob"] for t in sampled]
    if len(ids) != reply["usage"]["completion_tokens"]:
        ids = tok(choice["text"], add_special_tokens=False)["input_ids"]
        logps = [0.0] * len(ids)
    if choice.get("finish_reason") == "stop" and ids[-1:] != [turn_end_id]:  # the learner sees the turn end
        ids, logps = [*ids, turn_end_id], [*logps, 0.0]
    return ids, logps


def merged_adapters(sft: Path | None) -> list[Path]:
    """The GGUF twin of the SFT run the learner starts from (merged into its weights), if any."""
    if not sft:
        return []
    adapter = read_adapter(Path(sft))
    if adapter.gguf is None:
        raise BadInput(f"--rollouts llama.cpp needs the GGUF adapter of the --sft run {sft}; train it again with sep.")
    return [adapter.gguf]


class LlamaRollouts:
    """TRL's `rollout_func`: one sampled completion per prompt it is given (TRL repeats each prompt once
    per generation), from an in-process llama.cpp that carries the adapter of the last update.

    A prompt with a `shape` (an explain prompt's items, `stored_answer_shape`) is answered as inference
    answers it: the embedded backend's grammar holds the 1-3 cited items, 판단: and the label, and the
    reasons follow freely. Without it the model lists every item and rarely reaches a label in 160
    tokens, so every completion of a group earns the same (unparsable) reward. Other prompts are
    sampled freely, with llama.cpp's own token ids."""

    def __init__(self, sampler: Callable[[list[str]], EmbeddedChatModel], base_folder: Path, turn_end_id: int,
                 max_tokens: int, temperature: float, seed: int, workdir: Path, under: list[Path] = (),
                 shapes: dict[str, tuple[list[dict], AnswerShape]] | None = None, slots: int = 1) -> None:
        """`sampler(adapters)`: the embedded model with these GGUF adapters applied. `under`: adapters
        already merged into the learner's weights (its --sft run), applied before the policy's own, so
        llama.cpp samples from the same model the trainer learns on. `shapes`: rendered prompt → (its
        chat, the shape its answer is held to). `slots`: completions sampled at once (the sampler's slots)."""
        self.sampler, self.base_folder, self.turn_end_id, self.under = sampler, Path(base_folder), turn_end_id, list(under)
        self.slots = slots
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self.shapes = shapes or {}
        self.workdir = Path(workdir)  # the adapter llama.cpp samples with, as of the last update
        self.chat: EmbeddedChatModel | None = None
        self.step: int | None = None
        self.tokens, self.seconds = 0, 0.0  # completion tokens sampled and the seconds it took, for the run's metrics
        self.completions = 0

    def chat_for(self, policy: Any, step: int) -> EmbeddedChatModel:
        """llama.cpp with the policy's adapter as it is now (written again only after an update)."""
        if self.chat is not None and step == self.step:
            return self.chat
        rank = launch_rank()[0]  # each process of a data-parallel launch samples with its own copy
        folder = self.workdir / ("adapter" if rank == 0 else f"adapter.rank{rank}")
        policy.save_pretrained(folder)
        lora = write_gguf_adapter(folder, self.base_folder)
        self.chat = None
        gc.collect()  # the old server (and its model) goes before the next one loads
        self.chat, self.step = self.sampler([str(p) for p in [*self.under, lora]]), step
        return self.chat

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, list]:
        """Each prompt's completion, `slots` of them decoded together; each keeps its own seed."""
        started = time.perf_counter()
        step = trainer.state.global_step
        model = trainer.accelerator.unwrap_model(trainer.model)
        chat = self.chat_for(getattr(model, "policy", model), step)  # PPO's wrapper holds the policy beside its value
        chat._ensure_server()  # loaded once, before the threads share it
        tok = trainer.processing_class
        if not all(isinstance(p, str) for p in prompts):
            raise BadInput("--rollouts llama.cpp takes prompts rendered as text.")

        def one(i: int) -> tuple[list[int], list[float]]:
            seed = self.seed + 1009 * step + i
            if prompts[i] in self.shapes:
                return self.shaped(chat, tok, *self.shapes[prompts[i]], seed)
            reply = chat._complete(prompts[i], max_tokens=self.max_tokens, logprobs=1, temperature=self.temperature,
                                   seed=seed)
            return sampled_ids(reply, tok, self.turn_end_id)

        with ThreadPoolExecutor(max_workers=self.slots) as pool:
            sampled = list(pool.map(one, range(len(prompts))))
        self.tokens += sum(len(ids) for ids, _ in sampled)
        self.completions += len(sampled)
        self.seconds += time.perf_counter() - started
        return {"prompt_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts],
                "completion_ids": [ids for ids, _ in sampled], "logprobs": [logps for _, logps in sampled]}

    def shaped(self, chat: EmbeddedChatModel, tok: Any, messages: list[dict], shape: AnswerShape,
               seed: int) -> tuple[list[int], list[float]]:
        """One answer through the embedded backend's own path (grammar, then free reasons), as token ids."""
        message = chat.invoke(convert_to_messages(messages), answer_shape=shape, temperature=self.temperature,
                              seed=seed, max_tokens=self.max_tokens)
        ids = tok(str(message.content), add_special_tokens=False)["input_ids"]
        if message.usage_metadata["output_tokens"] < self.max_tokens:  # it ended its turn before the budget
            ids = [*ids, self.turn_end_id]
        return ids, [0.0] * len(ids)


class PPOGeneration:
    """TRL PPO's `batch_generation` (it has no `rollout_func`), answered by `LlamaRollouts`: the queries'
    completions are sampled by llama.cpp with the policy's current adapter, and the logits PPO reads its
    old log-probs from come from one forward pass of the learner over them (TRL's own `forward`, divided
    by the temperature as its sampler's scores are), so the ratios PPO clips are the learner's own.

    `prompts`: a query's token ids → its rendered prompt (the text llama.cpp reads, and the key of the
    rollouts' answer shapes)."""

    def __init__(self, rollouts: LlamaRollouts, trainer: Any, prompts: dict[tuple[int, ...], str], temperature: float) -> None:
        self.rollouts, self.trainer, self.prompts, self.temperature = rollouts, trainer, prompts, temperature

    def __call__(self, model: Any, queries: Any, local_rollout_forward_batch_size: int, pad_token_id: int,
                 generation_config: Any) -> tuple[Any, Any]:
        import torch
        from trl.experimental.ppo.ppo_trainer import forward

        texts = [self.prompts[tuple(q[q != pad_token_id].tolist())] for q in queries]  # TRL pads queries on the left
        sampled = self.rollouts(texts, self.trainer)["completion_ids"]
        width = max(1, min(generation_config.max_new_tokens, max(len(ids) for ids in sampled)))
        responses = torch.full((len(sampled), width), pad_token_id, dtype=queries.dtype, device=queries.device)
        for row, ids in enumerate(sampled):
            ids = ids[:width]
            responses[row, :len(ids)] = torch.tensor(ids, dtype=queries.dtype)
        query_responses = torch.cat((queries, responses), 1)
        with torch.no_grad():
            logits = forward(model, query_responses, pad_token_id).logits[:, queries.shape[1] - 1:-1]
        return query_responses, logits / (self.temperature + 1e-7)


@contextmanager
def ppo_rollouts(generation: PPOGeneration | None) -> Iterator[None]:
    """TRL's PPO samples through `generation` inside this block (it calls its module's `batch_generation`);
    with None it samples as it always does."""
    from trl.experimental.ppo import ppo_trainer

    own = ppo_trainer.batch_generation
    if generation is not None:
        ppo_trainer.batch_generation = generation
    try:
        yield
    finally:
        ppo_trainer.batch_generation = own


def rollout_counts(rollouts: LlamaRollouts | None) -> dict:
    """The run's sampling through llama.cpp, summed over the processes of a launch (each samples its share)."""
    if rollouts is None:
        return dict.fromkeys(("rollout_tokens", "rollout_completions", "rollout_seconds"))
    (tokens, completions), (seconds,) = over_processes([rollouts.tokens, rollouts.completions], [rollouts.seconds])
    return {"rollout_tokens": int(tokens), "rollout_completions": int(completions), "rollout_seconds": round(seconds, 1)}


def llama_rollouts(settings: Settings, config: Any, base: TrainingBase, tok: Any, rows: list[dict], workdir: Path,
                   max_tokens: int, temperature: float) -> tuple[LlamaRollouts | None, str]:
    """An RL run's `--rollouts` resolved (`rollouts_where`), and its llama.cpp sampler when that is where:
    the base's GGUF under the --sft run's adapter, explain prompts held to the inference grammar."""
    where = rollouts_where(config.rollouts, base)
    if where != "llama.cpp":
        return None, where
    slots = min(config.rollout_slots, config.batch_size)  # a call samples one batch: more slots only hold memory
    return LlamaRollouts(rollout_sampler(settings, base, config.threads, slots), base.folder,
                         tok.eos_token_id, max_tokens, temperature, config.seed, workdir, merged_adapters(config.sft),
                         answer_shapes(rows, base.fmt, settings), slots), where
