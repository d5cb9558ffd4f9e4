"""The GPU recipe's precision, checked as far as a CPU allows: SFT, reward, PPO and GRPO with bf16
mixed precision (what TRL's configs take on a GPU), against the fp32 that sep pins on a CPU.

On a CPU sep trains in fp32 (`sep.train.run.precision`): a CPU without bf16 units runs bf16 GEMMs
about 100x slower. This forces bf16 autocast on the CPU instead, so the code path a GPU takes (the
shared-base PPO's value head, the llama.cpp adapter written from the trained LoRA, the reward
head) runs end to end on a tiny model. It shows that the path works, not how fast a GPU is.

Run: .venv/bin/python bench/train_precision.py [--base-model DIR] [--steps 2]
The default base is the tiny Qwen2 of the tests (built by `pytest tests/test_train.py` under
the pytest cache, or `python -c "from tests.tiny import tiny_qwen; ..."`); any small transformers
folder with a chat template works.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NEWS = ["반도체 수출 증가", "외국인 순매수 확대", "파운드리 수주 발표", "HBM 공급 계약", "배당 확대 발표",
        "신제품 출시 호평", "목표주가 상향", "메모리 가격 반등", "자사주 매입 결정", "영업이익 증가"]


def toy(folder: Path) -> tuple[Path, Path]:
    """A separable preference set (chosen answers name the news) and its SFT twin, as the tests write."""
    pairs, sft = folder / "pairs.jsonl", folder / "sft.jsonl"
    with pairs.open("w") as p, sft.open("w") as s:
        for i, n in enumerate(NEWS):
            p.write(json.dumps({"prompt": f"삼성전자 2022-05-{i + 2:02d} 뉴스: {n}\n내일 주가는?",
                                "chosen": f"상승\n{n} 덕분에 오를 것이다.", "rejected": "하락\n잘 모르겠다.",
                                "ret": 0.01 if i % 2 else -0.02}, ensure_ascii=False) + "\n")
            s.write(json.dumps({"prompt": f"삼성전자 뉴스: {n}\n내일 주가는?", "completion": f"상승\n{n} 덕분에 오를 것이다."},
                               ensure_ascii=False) + "\n")
    return pairs, sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=str(Path(tempfile.gettempdir()) / "pt" / "tiny" / "tiny-qwen2"))
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.base_model).is_dir():
        sys.exit(f"{args.base_model} is not a transformers folder: pass --base-model DIR.")

    import sep.train.ppo as ppo_module
    import sep.train.run as run_module
    from sep.api.runs import train_model
    from sep.memory import open_memory

    work = Path(tempfile.mkdtemp(prefix="sep-precision-"))
    pairs, sft = toy(work)
    kinds = [("sft", sft, {}), ("reward", pairs, {"learning_rate": 1e-2}),
             ("ppo", pairs, {"reward_kind": "both", "reward": "{reward}", "sft": "{sft}", "response_length": 16}),
             ("grpo", pairs, {"reward_kind": "both", "reward": "{reward}", "sft": "{sft}", "rollouts": "transformers",
                              "num_generations": 2, "max_completion_length": 16})]
    print(f"{'precision':<10}{'run':<8}{'seconds':>8}  result")
    for name, precision in [("fp32", {"use_cpu": True, "bf16": False, "fp16": False}),
                            ("bf16", {"use_cpu": True, "bf16": True, "fp16": False})]:
        run_module.precision = ppo_module.precision = lambda p=precision: p  # the one switch a GPU flips
        db = open_memory(work / f"{name}.db")
        for kind, data, extra in kinds:
            fields = {k: Path(str(v).format(reward=work / name / "reward", sft=work / name / "sft")) if isinstance(v, str)
                      and v.startswith("{") else v for k, v in extra.items()}
            started = time.perf_counter()
            try:
                m = train_model(kind, db, data=data, out=work / name / kind, max_steps=args.steps,
                                base_model=args.base_model, **fields).metrics
                shown = {k: m[k] for k in ("steps", "updates", "train_loss", "pair_accuracy", "mean_score", "gguf_adapter")
                         if m.get(k) is not None}
                result = "ok " + json.dumps(shown, ensure_ascii=False)
            except Exception as exc:  # a failure is the finding
                result = f"FAILED {type(exc).__name__}: {str(exc)[:300]}"
            print(f"{name:<10}{kind:<8}{time.perf_counter() - started:>8.1f}  {result}", flush=True)


if __name__ == "__main__":
    main()
