"""The GPU recipe's precision, checked as far as a CPU allows: SFT, reward, PPO and GRPO with bf16
mixed precision (what TRL's configs take on a GPU), against fp32.

`--precision auto` trains in fp32 on a CPU without bf16 units, where bf16 GEMMs run about 100x
slower, and in bf16 on a GPU or a CPU with AMX or AVX512-BF16. This runs both (`--precision
fp32|bf16`) whatever the CPU, so the code path a GPU takes (the shared-base PPO's value head, the llama.cpp adapter written from the trained LoRA, the reward
head) runs end to end on a tiny model. It shows that the path works, not how fast a GPU is.

Run: .venv/bin/python bench/train_precision.py [--base-model DIR] [--steps 2]
Without --base-model it builds the tests' tiny Qwen2 (tests/tiny.py: random weights, the packaged
Qwen's tokenizer) in a temporary folder; any small transformers folder with a chat template works.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tiny model and its toy sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", help="A transformers folder [the tests' tiny Qwen2, built here].")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if args.base_model and not Path(args.base_model).is_dir():
        sys.exit(f"{args.base_model} is not a transformers folder: pass --base-model DIR.")

    from sep.api.runs import train_model
    from sep.memory import open_memory
    from sep.models import DEFAULT_MODEL, local_model
    from sep.settings import Settings
    from tiny import tiny_qwen, toy_sets

    work = Path(tempfile.mkdtemp(prefix="sep-precision-"))
    base = args.base_model or str(tiny_qwen(work / "tiny", local_model(Settings().cache_dir, DEFAULT_MODEL))[0])
    pairs, sft = toy_sets(work)
    print(f"{'precision':<10}{'run':<8}{'seconds':>8}  result")
    for name in ("fp32", "bf16"):  # --precision: the one switch a GPU flips
        db, runs = open_memory(work / f"{name}.db"), work / name
        on_these = {"reward_kind": "both", "reward": runs / "reward", "sft": runs / "sft"}
        for kind, data, fields in [("sft", sft, {}), ("reward", pairs, {"learning_rate": 1e-2}),
                                   ("ppo", pairs, {**on_these, "response_length": 16}),
                                   ("grpo", pairs, {**on_these, "rollouts": "transformers", "num_generations": 2,
                                                    "max_completion_length": 16})]:
            started = time.perf_counter()
            try:
                m = train_model(kind, db, data=data, out=runs / kind, max_steps=args.steps,
                                base_model=base, precision=name, **fields).metrics
                shown = {k: m[k] for k in ("steps", "updates", "train_loss", "pair_accuracy", "mean_score", "gguf_adapter")
                         if m.get(k) is not None}
                result = "ok " + json.dumps(shown, ensure_ascii=False)
            except Exception as exc:  # a failure is the finding
                result = f"FAILED {type(exc).__name__}: {str(exc)[:300]}"
            print(f"{name:<10}{kind:<8}{time.perf_counter() - started:>8.1f}  {result}", flush=True)


if __name__ == "__main__":
    main()
