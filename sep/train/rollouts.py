"""GRPO's rollouts through llama.cpp (`--rollouts llama.cpp`): the base's GGUF with the policy's current
LoRA as a GGUF adapter, rewritten after each update.

On 2 cores transformers' `generate` on the fp32 training weights runs at about 3 tok/s and llama.cpp
at 19-22 on the quantized base (issue 34). TRL's GRPOTrainer takes a `rollout_func` for this; the
completions it returns are the token ids llama.cpp sampled (the same vocabulary), and the loss is
computed by the trainer on its own weights. The difference between the quantized sampler and the fp32
learner is the price; `bench/train_speed.py` prints both paths.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from sep.adapters import read_adapter, write_gguf_adapter
from sep.backends.embedded import server_params
from sep.errors import BadInput
from sep.llm import LLMUnavailable
from sep.models import CATALOG, local_model
from sep.settings import Settings
from sep.train.base import TrainingBase


def base_gguf(settings: Settings, base: TrainingBase) -> Path:
    """The GGUF llama.cpp samples from: a catalog base's packaged file, or FOLDER.gguf beside a folder base."""
    if base.name in CATALOG:
        return Path(local_model(settings.cache_dir, base.name).path)
    beside = Path(base.folder).with_suffix(".gguf")
    if not beside.exists():
        raise BadInput(f"--rollouts llama.cpp samples from the base as a GGUF: use a catalog --base-model "
                       f"({', '.join(CATALOG)}), or put {beside.name} beside {Path(base.folder).name}.")
    return beside


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
    per generation), from an in-process llama.cpp that carries the adapter of the last update."""

    def __init__(self, gguf: Path, base_folder: Path, turn_end_id: int, max_tokens: int, temperature: float,
                 threads: int, n_ctx: int, seed: int, workdir: Path, under: list[Path] = ()) -> None:
        """`under`: GGUF adapters already merged into the learner's weights (its --sft run), applied
        before the policy's own, so llama.cpp samples from the same model the trainer learns on."""
        self.gguf, self.base_folder, self.turn_end_id, self.under = gguf, Path(base_folder), turn_end_id, list(under)
        self.max_tokens, self.temperature, self.threads, self.n_ctx, self.seed = max_tokens, temperature, threads, n_ctx, seed
        self.workdir = Path(workdir)  # the adapter llama.cpp samples with, as of the last update
        self.server: Any = None
        self.step: int | None = None
        self.tokens, self.seconds = 0, 0.0  # completion tokens sampled and the seconds it took, for the run's metrics

    def server_for(self, policy: Any, step: int) -> Any:
        """llama.cpp with the policy's adapter as it is now (written again only after an update)."""
        if self.server is not None and step == self.step:
            return self.server
        import xllamacpp as xl

        folder = self.workdir / "adapter"
        policy.save_pretrained(folder)
        lora = write_gguf_adapter(folder, self.base_folder)
        self.server = None
        gc.collect()  # the old server (and its model) goes before the next one loads
        params = server_params(str(self.gguf), self.threads, self.n_ctx)
        params.lora_adapters = [xl.CommonAdapterLoraInfo(str(path), 1.0) for path in [*self.under, lora]]
        self.server, self.step = xl.Server(params), step
        return self.server

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, list]:
        started = time.perf_counter()
        step = trainer.state.global_step
        server = self.server_for(trainer.accelerator.unwrap_model(trainer.model), step)
        tok = trainer.processing_class
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise BadInput("--rollouts llama.cpp takes prompts rendered as text.")
            reply = server.handle_completions({"prompt": prompt, "max_tokens": self.max_tokens, "logprobs": 1,
                                               "temperature": self.temperature, "seed": self.seed + 1009 * step + i})
            if "error" in reply:
                raise LLMUnavailable(f"llama.cpp rollout failed: {reply['error']}")
            ids, logps = sampled_ids(reply, tok, self.turn_end_id)
            self.tokens += len(ids)
            out["prompt_ids"].append(tok(prompt, add_special_tokens=False)["input_ids"])
            out["completion_ids"].append(ids)
            out["logprobs"].append(logps)
        self.seconds += time.perf_counter() - started
        return out
