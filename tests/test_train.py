"""The trainers on a tiny randomly initialised Qwen2 with the real Qwen2.5 tokenizer and chat template
(tests/tiny.py, `--base-model DIR`): the default model's architecture, tiny step counts, seconds on a
CPU. tests/test_adapters.py trains the default model itself once, and Gemma's turn end is read there.

The toy preference set is separable on purpose: chosen answers name the news, rejected ones
shrug. Each trainer must change its LoRA parameters (B starts at zero), and the reward model
must rank chosen over rejected on pairs it never saw.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sep.memory import open_memory
from sep.settings import Settings

from conftest import run
from tiny import NEWS, toy_sets


def lora_b_norm(adapter: Path) -> float:
    """Sum of |B| over LoRA layers: zero at initialisation, so > 0 means training moved them."""
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    b = [t for k, t in weights.items() if "lora_B" in k]
    assert b, "no LoRA B matrices in the adapter"
    return float(sum(t.abs().sum() for t in b))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train")
    toy_sets(d)
    return d


@pytest.fixture(scope="module")
def base(tiny) -> str:
    """The tiny Qwen2's folder, as `--base-model` takes it."""
    return str(tiny[0])


@pytest.fixture(scope="module")
def trained(toy, base) -> dict:
    """SFT, then the reward model, through the CLI as users run them (each --json)."""
    db = toy / "sep.db"
    out = {}
    for kind, args in [("sft", ["--data", str(toy / "sft.jsonl"), "--max-steps", "2"]),
                       ("reward", ["--pairs", str(toy / "pairs.jsonl"), "--max-steps", "12", "--learning-rate", "1e-2"])]:
        done = run("train", kind, *args, "--base-model", base, "--out", str(toy / kind), "--json", db=db)
        assert done.returncode == 0, done.stderr[-3000:]
        out[kind] = json.loads(done.stdout)
    return out




def test_market_reward_signs_for_long_and_short():
    from sep.train import market_reward, signal_reward

    assert market_reward("up", 0.02) == pytest.approx(0.02)      # long, price rose: +|r|
    assert market_reward("up", -0.02) == pytest.approx(-0.02)    # long, price fell: -|r|
    assert market_reward("down", -0.03) == pytest.approx(0.03)   # short, price fell: +|r| (FinRLlama had -)
    assert market_reward("down", 0.03) == pytest.approx(-0.03)   # short, price rose: -|r|
    assert market_reward(None, 0.01) == pytest.approx(-0.01) and market_reward(None, -0.01) == pytest.approx(-0.01)
    assert signal_reward(7.0, -0.02, 3.0) == pytest.approx(-0.02) and signal_reward(-7.0, -0.02, 3.0) == pytest.approx(0.02)
    assert signal_reward(2.0, 0.05, 3.0) == 0.0 and signal_reward(None, 0.05, 3.0) == pytest.approx(-0.05)


def test_grpo_rewards_read_the_label_as_inference_does_and_mix_in_their_own_scales():
    """RLMF's reward per completion, alone (TRL calls it with a batch): the market's, the score line's,
    the reward model's, and both mixed, the model's scale being the spread of every score so far."""
    from sep.train import rlmf_rewards

    texts = ["근거:\n[t1] + 수주\n판단: 상승\n이유: 수주가 늘었다.", "하락\n금리 부담", "잘 모르겠다"]
    ret = [0.02, 0.02, 0.02]
    assert rlmf_rewards(texts, ret, "market") == pytest.approx([0.02, -0.02, -0.02])  # unparsable counts as wrong
    assert rlmf_rewards(texts, ret, "market", flagged=[True, False, False]) == pytest.approx([-0.02, -0.02, -0.02])
    scored = ["상승\n점수: 7", "상승\n점수: 1", "상승"]
    assert rlmf_rewards(scored, ret, "market", signal_threshold=3.0) == pytest.approx([0.02, 0.0, -0.02])
    assert rlmf_rewards(texts, ret, "model", [0.5, -0.5, 0.0]) == [0.5, -0.5, 0.0]
    seen: list[float] = []
    both = rlmf_rewards(texts[:2], ret[:2], "both", [1.0, -1.0], seen, market_scale=0.02, model_weight=0.5)
    assert both == pytest.approx([1 + 0.5 * 1.0, -1 - 0.5 * 1.0]) and seen == [1.0, -1.0]  # pstdev(1, -1) = 1
    again = rlmf_rewards(texts[:1], ret[:1], "both", [3.0], seen, market_scale=0.02, model_weight=0.5)
    assert again == pytest.approx([1 + 0.5 * 3.0 / float(__import__("statistics").pstdev([1.0, -1.0, 3.0]))])


def test_pairs_from_memory_are_oriented_by_the_market(memory):
    from sep.train import pair_rows

    memory.execute("INSERT INTO predictions (stock, date, trial, target_day, actual, label, correct, response, prompt, "
                   "model, created_at) VALUES ('005930', '2022-05-31', 0, '2022-06-02', 'down', 'up', 0, 'r', 'p', 'm', 'now')")
    for chosen, rejected, chosen_label in [("하락\n금리 부담", "상승\n기대", "down"), ("상승\n기대", "하락\n금리 부담", "up")]:
        memory.execute("INSERT INTO pairs (stock, date, prompt, chosen, rejected, chosen_label, rejected_label, model, "
                       "created_at) VALUES ('005930', '2022-05-31', ?, ?, ?, ?, 'x', 'm', 'now')",
                       [f"prompt {chosen_label}", chosen, rejected, chosen_label])
    rows = pair_rows(memory, None)
    assert len(rows) == 2
    for r in rows:  # whatever was stored, chosen is the answer that matched the fall
        assert r["chosen"].startswith("하락") and r["rejected"].startswith("상승")
    assert sorted(r["prompt"][0]["content"] for r in rows) == ["prompt down", "prompt up"]  # chat messages, rendered
    assert all(r["prompt"][0]["role"] == "user" for r in rows)                           # by the base's own template


@pytest.mark.slow
def test_sft_changes_parameters_and_resumes(trained, toy, base):
    sft = trained["sft"]
    assert sft["steps"] == 2 and sft["examples"] == len(NEWS)
    assert lora_b_norm(toy / "sft" / "adapter") > 0
    assert json.loads((toy / "sft" / "config.json").read_text())["max_steps"] == 2
    assert (toy / "sft" / "data.sha256").read_text().strip()
    config = json.loads((toy / "sft" / "config.json").read_text())
    assert config["base_model"] == str(Path(base).resolve()) and (toy / "sft" / "adapter" / "adapter.gguf").stat().st_size > 0
    again = run("train", "sft", "--data", str(toy / "sft.jsonl"), "--max-steps", "3", "--out", str(toy / "sft"),
                "--base-model", base, "--json", db=toy / "sep.db")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(again.stdout)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 3
    db = open_memory(toy / "sep.db")
    runs = db.execute("SELECT kind, status, data_hash, examples, base_model FROM runs WHERE kind = 'sft'").fetchall()
    assert [r[1] for r in runs] == ["done", "done"] and runs[0][2] == runs[1][2] and runs[0][3] == len(NEWS)
    assert {r[4] for r in runs} == {str(Path(base).resolve())}
    other = run("train", "sft", "--data", str(toy / "sft.jsonl"), "--max-steps", "4", "--out", str(toy / "sft"),
                db=toy / "sep.db")  # the default base, into a folder that holds a run on another base
    assert other.returncode == 2 and f"holds a run on {Path(base).resolve()}, not on qwen2.5-coder-1.5b" in other.stderr


def test_a_cpu_run_hands_the_heap_a_step_freed_back_after_every_step(toy, base, tmp_path, monkeypatch):
    """glibc keeps the memory a step frees, and steps of other lengths reuse it badly: a bf16 stance run
    of the default model grew from 10.5 to 13.4 GB resident in 40 steps (docs/training.md). So every
    step of a CPU run ends by handing it back (malloc_trim), once a step plus once when the run ends."""
    import sep.train.run as run_module
    from sep.train import trainer

    trims = []
    monkeypatch.setattr(run_module, "release_memory", lambda: trims.append(1))
    config, train = trainer("sft")
    metrics = train(Settings(), config(base_model=base, out=tmp_path / "sft", max_steps=3), None, toy / "sft.jsonl")
    assert metrics["steps"] == 3 and len(trims) == 3 + 1


def launch_two(*args: str, db: Path) -> subprocess.CompletedProcess:
    """`sep` under torchrun's two CPU processes (gloo): what `accelerate launch` does on two GPUs."""
    from conftest import OURS, SHARE

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(OURS)}, **SHARE, "SEP_DB": str(db),
           "SEP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "sep.cli", *args], capture_output=True, text=True, env=env, timeout=600, check=False)


def test_a_data_parallel_launch_trains_on_shares_and_writes_one_run(toy, base, tmp_path):
    """What `accelerate launch` does on a host with several GPUs, here with torchrun's two CPU processes
    (gloo): each process takes half of every epoch's examples, and rank 0 alone writes the folder, the
    `runs` row and the report. Before, each process recorded the run and printed it, and both wrote the
    same adapter files at once."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, db = tmp_path / "sft", tmp_path / "sep.db"
    done = launch_two("train", "sft", "--data", str(toy / "sft.jsonl"), "--max-steps", "2", "--base-model", base,
                      "--out", str(out), "--json", db=db)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # one report: two would not parse as one JSON document
    assert report["processes"] == 2 and report["steps"] == 2
    # 10 examples, 5 a process, batches of 2: 3 steps an epoch, so 2 steps are 2/3 of one (1 process: 2/5)
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2 / 3, abs=1e-3)
    rows = open_memory(db).execute("SELECT status, examples FROM runs").fetchall()
    assert rows == [("done", len(NEWS))]
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "adapter")
    assert lora_b_norm(out / "adapter") > 0 and adapted.active_adapter == "default"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    # what vLLM's PEFTHelper refuses (vllm/lora/peft_helper.py): modules to save, DoRA, a bias, r above --max-lora-rank
    assert not config["modules_to_save"] and not config["use_dora"] and config["bias"] == "none" and config["r"] <= 8


@pytest.mark.slow
def test_a_stance_run_learns_the_label_words_on_its_last_blocks_and_keeps_its_prompt(toy, base):
    """`sep train stance` on a labelled file (both languages, balanced per label): only the last
    --lora-layers blocks get adapters, they move, and the run keeps the prompt it learned on
    (no worked examples), which `sep stance --policy RUN` then asks with."""
    from safetensors.torch import load_file

    from conftest import FIXTURES
    from sep.prompting import load_prompt

    done = run("train", "stance", "--data", str(FIXTURES / "phrasebank_excerpt.csv"), "--text-column",
               "sentence,kor_sentence", "--per-label", "2", "--lora-layers", "1", "--max-steps", "2", "--batch-size", "4",
               "--base-model", base, "--out", str(toy / "stance"), "--json", db=toy / "sep.db")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["steps"] == 2 and metrics["examples"] == 12  # 2 per label, 3 labels, 2 languages
    assert metrics["labels"] == {f"{lang}_{s}": 2 for lang in ("en", "ko") for s in ("negative", "neutral", "positive")}
    assert lora_b_norm(toy / "stance" / "adapter") > 0
    blocks = {int(k.split(".layers.")[1].split(".")[0]) for k in load_file(str(toy / "stance" / "adapter" /
                                                                          "adapter_model.safetensors")) if ".layers." in k}
    assert blocks == {1}  # the tiny Qwen2 has 2 blocks: the last one
    for lang in ("ko", "en"):
        learned = load_prompt(lang, "stance", toy / "stance" / "prompts")
        assert learned.examples == () and learned.labels == ("positive", "neutral", "negative")
        assert learned.system == load_prompt(lang, "stance").system
    bad = run("train", "stance", "--data", str(FIXTURES / "phrasebank_excerpt.csv"), "--text-column", "sentence", "--label-column", "gold",
              "--base-model", base, "--out", str(toy / "stance-bad"), db=toy / "sep.db")
    assert bad.returncode == 2 and "no column 'gold'" in bad.stderr


@pytest.mark.slow
def test_reward_model_ranks_chosen_over_rejected_on_held_out_pairs(trained, toy, base):
    from sep.train import load_reward_model

    rm = trained["reward"]
    assert rm["eval_pairs"] == 2 and rm["train_pairs"] == len(NEWS) - 2 and rm["too_long_dropped"] == 0
    assert rm["pair_accuracy"] == 1.0 and rm["margin"] > 0
    assert lora_b_norm(toy / "reward" / "adapter") > 0
    reward = load_reward_model(toy / "reward", Settings())  # reloaded as predict does, on the base its run names
    assert reward.base == str(Path(base).resolve()) and reward.fmt.turn_end == "<|im_end|>"
    for line in (toy / "pairs.jsonl").read_text().splitlines():
        pair = json.loads(line)
        chosen, rejected = reward.scores(pair["prompt"], [pair["chosen"], pair["rejected"]])
        assert chosen > rejected


@pytest.mark.slow
@pytest.mark.parametrize("rollouts", ["transformers", "llama.cpp"])
def test_ppo_runs_two_updates_and_moves_the_policy(trained, toy, base, rollouts):
    """Both samplers: TRL's generate, and llama.cpp with the policy's adapter (TRL's PPO then reads its old
    log-probs from the learner's own forward pass over what llama.cpp sampled)."""
    out = toy / f"ppo-{rollouts}"
    done = run("train", "ppo", "--reward-kind", "both", "--reward", str(toy / "reward"), "--sft", str(toy / "sft"), "--pairs",
               str(toy / "pairs.jsonl"), "--max-steps", "2", "--response-length", "24", "--base-model", base,
               "--rollouts", rollouts, "--out", str(out), "--json", db=toy / "sep.db")  # short: the loop, not the prose
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["updates"] == 2 and metrics["mean_score"] is not None and metrics["rollouts"] == rollouts
    assert lora_b_norm(out / "adapter") > 0
    if rollouts == "llama.cpp":  # two updates of a batch of 2, each sampled with the adapter as it then was
        assert metrics["rollout_completions"] == 4 and metrics["rollout_tokens"] > 0
        assert metrics["kl"] is not None and abs(metrics["kl"]) < 1.0  # old log-probs are the learner's: no blow-up


@pytest.mark.slow
def test_ppo_and_grpo_train_under_a_data_parallel_launch(trained, toy, base, tmp_path):
    """The GPU recipe's `accelerate launch`, as two CPU processes. TRL's PPO read `model.policy` on the
    DistributedDataParallel wrapper and broke (huggingface/trl#2375); and each process counted only
    its own share of the rollouts and of each group, so the report halved them."""
    common = ["--reward-kind", "both", "--reward", str(toy / "reward"), "--sft", str(toy / "sft"), "--pairs",
              str(toy / "pairs.jsonl"), "--max-steps", "2", "--base-model", base, "--json"]
    ppo = launch_two("train", "ppo", *common, "--response-length", "16", "--out", str(tmp_path / "ppo"),
                     db=tmp_path / "sep.db")
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    metrics = json.loads(ppo.stdout)
    assert metrics["processes"] == 2 and metrics["updates"] == 2  # a step is one update of both processes' batches
    assert lora_b_norm(tmp_path / "ppo" / "adapter") > 0
    grpo = launch_two("train", "grpo", *common, "--rollouts", "llama.cpp", "--num-generations", "4",
                      "--max-completion-length", "16", "--out", str(tmp_path / "grpo"), db=tmp_path / "sep.db")
    assert grpo.returncode == 0, grpo.stderr[-3000:]
    metrics = json.loads(grpo.stdout)
    # a batch of 2 on each of 2 processes holds one group of 4: two updates sample 2 groups, 8 completions
    assert metrics["processes"] == 2 and metrics["steps"] == 2
    assert metrics["rollout_completions"] == 8 and metrics["groups"] == 2
    assert lora_b_norm(tmp_path / "grpo" / "adapter") > 0


def test_the_reward_holds_an_answer_to_the_gate_inference_holds_it_to():
    """A right label with an invented date earns the wrong-answer reward (inference would withhold it); a
    grounded answer earns the market's. The gate reads the stored prompt: its inputs and its window."""
    from sep.llm import ChatFormat
    from sep.train import MarketFeedback

    chat = [{"role": "system", "content": "너는 주식 분석가다. 근거를 인용하고 판단을 쓴다."},
            {"role": "user", "content": "2022-05-06..2022-05-09 뉴스:\n[t1] 삼성전자 반도체 수출 증가\n"
                                        "[t2] 삼성전자 목표주가 하향\n내일 종가는?"}]
    grounded = "근거:\n[t1] + 반도체 수출 증가\n판단: 상승\n이유: 반도체 수출이 증가했다."
    invented = "근거:\n[t1] + 반도체 수출 증가\n판단: 상승\n이유: 2023년 1월 5일 반도체 수출이 증가했다."
    feedback = MarketFeedback("market", ChatFormat("{{ messages }}", "<|im_end|>"))
    texts = [grounded, invented, grounded]
    assert feedback(texts, [chat] * 3, [0.02] * 3, ["2022-05-09", "2022-05-09", ""]) == pytest.approx([0.02, -0.02, 0.02])
    assert feedback(texts, [chat] * 3, [0.02] * 3) == pytest.approx([0.02] * 3)  # no day: nothing to hold it to


def test_ppo_holds_one_base_and_reads_the_markets_reward_off_the_answer(base):
    """PPO's four roles on one base: the reference is the base itself when the adapter is off; the
    value model adds only a head (its trunk is the policy's decoder); the reward is the market's verdict
    on the decoded answer, read by TRL's own `get_reward` where it reads a reward model's."""
    import torch
    from peft import get_peft_model
    from trl.experimental.utils import get_reward

    from sep.train import (MarketFeedback, PPORunConfig, SharedValueHead, TextReward, TrainingBase, load_policy, lora,
                           turn_tokenizer)

    resolved = TrainingBase.resolve(Settings(), base)
    tok = turn_tokenizer(resolved)
    tok.padding_side = "left"
    plain = load_policy(resolved, None)
    policy = get_peft_model(load_policy(resolved, None), lora(PPORunConfig(base_model=base), "CAUSAL_LM", plain))
    ids = tok(resolved.fmt.prompt("삼성전자 뉴스: 반도체 수출 증가\n내일 주가는?"), return_tensors="pt").input_ids
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that has learned something
        on = policy(ids).logits
        with policy.disable_adapter():
            off = policy(ids).logits
        alone = plain(ids).logits
    assert torch.allclose(off, alone, atol=1e-5) and not torch.allclose(on, alone, atol=1e-3)

    value = SharedValueHead(policy)
    assert [n for n, _ in value.named_parameters()] == ["score.weight", "score.bias"]  # no second trunk
    assert value.trunk is policy.get_base_model().model

    chats = ["삼성전자 뉴스: 반도체 수출 증가\n내일 주가는?", "삼성전자 뉴스: 목표주가 하향\n내일 주가는?"]
    prompts = [{"input_ids": tok(resolved.fmt.prompt(c))["input_ids"], "chat": c, "ret": r} for c, r in zip(chats, (0.02, -0.03))]
    reward = TextReward(tok, MarketFeedback("market", resolved.fmt), prompts)
    queries = tok([resolved.fmt.prompt(c) for c in chats], return_tensors="pt", padding=True).input_ids
    tok.padding_side = "right"  # a rollout is padded after its turn end
    answers = tok(["상승\n수출이 늘어 오른다.<|im_end|>", "상승\n그래도 오른다.<|im_end|>"], return_tensors="pt",
                  padding=True, add_special_tokens=False).input_ids
    _, scores, _ = get_reward(reward, torch.cat([queries, answers], 1), tok.pad_token_id, queries.shape[1])
    assert scores.tolist() == pytest.approx([0.02, -0.03])  # both said up: right on the day that rose, wrong on the other


@pytest.mark.slow
def test_ppo_reads_the_reward_where_the_reward_model_learned_it(trained, toy, base):
    """PPO stops at <|im_end|>, checks EOS at it and reads the reward there: the text reward training saw."""
    import torch
    from trl.experimental.ppo.ppo_trainer import truncate_response
    from trl.experimental.utils import get_reward

    from sep.train import TrainingBase, load_reward_model, turn_tokenizer

    resolved = TrainingBase.resolve(Settings(), base)
    reward = load_reward_model(toy / "reward", Settings())
    ppo_tok = turn_tokenizer(resolved)
    assert ppo_tok.eos_token_id == ppo_tok.convert_tokens_to_ids("<|im_end|>")  # stop token == the EOS checked
    pair = json.loads((toy / "pairs.jsonl").read_text().splitlines()[0])
    query = ppo_tok(resolved.fmt.prompt(pair["prompt"]), return_tensors="pt").input_ids
    generated = ppo_tok(pair["chosen"] + "<|im_end|>\n<|im_start|>user\n더 쓰기", add_special_tokens=False,
                        return_tensors="pt").input_ids  # a rollout that runs on past the end of its turn
    response = truncate_response(ppo_tok.eos_token_id, ppo_tok.pad_token_id, generated)
    assert bool((response == ppo_tok.eos_token_id).any())  # so no missing-EOS penalty for a finished answer
    with torch.no_grad():
        _, score, _ = get_reward(reward.model, torch.cat([query, response], 1), ppo_tok.pad_token_id, query.shape[1])
    assert float(score[0]) == pytest.approx(reward.scores(pair["prompt"], [pair["chosen"]])[0], abs=1e-3)


@pytest.mark.slow
def test_grpo_with_market_and_model_reward_moves_the_policy(trained, toy, base):
    done = run("train", "grpo", "--rollouts", "transformers", "--reward-kind", "both", "--reward", str(toy / "reward"), "--sft", str(toy / "sft"),
               "--pairs", str(toy / "pairs.jsonl"), "--max-steps", "2", "--max-completion-length", "24",
               "--base-model", base, "--out", str(toy / "grpo"), "--json", db=toy / "sep.db")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["steps"] == 2 and metrics["mean_reward"] is not None
    assert metrics["groups"] == 2 and 0 <= metrics["zero_variance_groups"] <= 2  # one prompt's 2 completions a step
    assert lora_b_norm(toy / "grpo" / "adapter") > 0


def test_rollouts_default_to_llama_cpp_on_the_cpu_where_the_base_runs_there(base, tmp_path):
    """`--rollouts auto`: llama.cpp samples about 3x faster than transformers on a CPU and holds an explain
    prompt's answer to the inference grammar, so it is the default wherever the base runs in llama.cpp."""
    import shutil

    from sep.llm import ChatFormat
    from sep.train import TrainingBase, rollouts_where

    fmt = ChatFormat("{{ messages }}", "<|im_end|>")
    tiny = TrainingBase(str(base), Path(base), fmt)  # a folder with FOLDER.gguf beside it
    assert rollouts_where("auto", tiny) == "llama.cpp"
    assert rollouts_where("transformers", tiny) == "transformers" and rollouts_where("llama.cpp", tiny) == "llama.cpp"
    alone = tmp_path / "alone"  # the same folder with no GGUF beside it
    shutil.copytree(base, alone)
    assert rollouts_where("auto", TrainingBase(str(alone), alone, fmt)) == "transformers"
    other = tmp_path / "gpt2"  # an architecture sep writes no llama.cpp adapter for
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2", "num_hidden_layers": 2}))
    shutil.copy(Path(base).with_suffix(".gguf"), other.with_suffix(".gguf"))
    assert rollouts_where("auto", TrainingBase(str(other), other, fmt)) == "transformers"


def test_llama_cpp_rollouts_sample_what_the_adapted_policy_would(base, tmp_path):
    """Greedy, a llama.cpp rollout (the base's GGUF + the policy's adapter written as a GGUF) and
    transformers' generate on the PEFT policy give the same completion; after an update the adapter is
    written again, and the rollouts follow the new weights."""
    from types import SimpleNamespace

    import torch
    from peft import get_peft_model

    from sep.shapes import AnswerShape
    from sep.train import GRPORunConfig, LlamaRollouts, TrainingBase, load_policy, lora, rollout_sampler, turn_tokenizer

    resolved = TrainingBase.resolve(Settings(), base)
    tok = turn_tokenizer(resolved)
    plain = load_policy(resolved, None)
    policy = get_peft_model(plain, lora(GRPORunConfig(base_model=base), "CAUSAL_LM", plain)).eval()
    prompt = resolved.fmt.prompt("삼성전자 뉴스: 반도체 수출 증가\n내일 주가는?")
    ids = tok(prompt, return_tensors="pt").input_ids
    chat = [{"role": "user", "content": "뉴스:\n[t1] 반도체 수출 증가\n[t2] 목표주가 하향\n내일 주가는?"}]
    shaped = resolved.fmt.prompt(chat)
    shape = AnswerShape("상승", "하락", "판단:", "근거:", ("t1", "t2"))
    rollouts = LlamaRollouts(rollout_sampler(Settings(), resolved, 1), resolved.folder, tok.eos_token_id, 8, 0.0, 0,
                             tmp_path / "rollouts", shapes={shaped: (chat, shape)})
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              model=policy, processing_class=tok)
    seen = []
    for step in (0, 1):
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(step))  # an update
            greedy = policy.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id)[0, ids.shape[1]:]
        trainer.state.global_step = step
        out = rollouts([prompt, prompt], trainer)
        assert out["prompt_ids"][0] == ids[0].tolist()
        assert out["completion_ids"][0] == out["completion_ids"][1] == greedy.tolist()
        seen.append(out["completion_ids"][0])
    assert seen[0] != seen[1]  # the second update's adapter was loaded
    # completions sampled together, in two slots, come back in the prompts' order, as one slot samples them
    other = resolved.fmt.prompt("삼성전자 뉴스: 목표주가 하향\n내일 주가는?")
    together = LlamaRollouts(rollout_sampler(Settings(), resolved, 1, 2), resolved.folder, tok.eos_token_id, 8, 0.0, 0,
                             tmp_path / "together", slots=2)([prompt, other, prompt], trainer)
    alone = rollouts([prompt, other, prompt], trainer)
    assert together["completion_ids"] == alone["completion_ids"] and together["prompt_ids"] == alone["prompt_ids"]
    assert together["completion_ids"][0] != together["completion_ids"][1]
    # an explain prompt is answered as inference answers it: the grammar holds the cited items and the label
    rollouts.max_tokens = 40
    answer = tok.decode(rollouts([shaped], trainer)["completion_ids"][0], skip_special_tokens=True)
    assert answer.startswith("근거:") and re.search(r"판단: (상승|하락)", answer), answer
    assert set(re.findall(r"\[(t\d+)\]", answer)) <= {"t1", "t2"}


def test_a_rollouts_ids_survive_a_character_split_across_tokens_and_end_once(base):
    """llama.cpp lists a character sampled as several byte tokens once, under one id (measured on the
    default model at temperature 0.9: 37 of 640 ids missing, Hangul decoded as U+FFFD); then the whole
    text is tokenized again. A turn that ended carries the turn end once."""
    from sep.train import TrainingBase, sampled_ids, turn_tokenizer

    tok = turn_tokenizer(TrainingBase.resolve(Settings(), base))
    end = tok.eos_token_id
    text = "상승\n삼성전자 수출 증가"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    listed = [{"id": i, "logprob": -0.5} for i in [*ids, end]]

    def reply(content: list[dict], n: int, reason: str) -> dict:
        return {"choices": [{"text": text, "finish_reason": reason, "logprobs": {"content": content}}],
                "usage": {"completion_tokens": n}}

    assert sampled_ids(reply(listed, len(ids) + 1, "stop"), tok, end) == ([*ids, end], [-0.5] * (len(ids) + 1))
    assert sampled_ids(reply(listed[:-1], len(ids), "length"), tok, end)[0] == ids
    merged = listed[:2] + listed[3:-1]  # one id of the text missing, as llama.cpp reports a split character
    assert sampled_ids(reply(merged, len(ids), "length"), tok, end) == (ids, [0.0] * len(ids))
    assert sampled_ids(reply(merged, len(ids) + 1, "stop"), tok, end)[0] == [*ids, end]


@pytest.mark.slow
def test_grpo_samples_through_llama_cpp_and_counts_the_groups_that_teach(trained, toy, base):
    """A group of 4 with the default batch of 2: each update sees one whole group, two completions
    at a time (gradient accumulation), so a group may be larger than memory holds at once."""
    from sep.train.grpo import group_accumulation

    assert [group_accumulation(2, g) for g in (2, 4, 8, 3)] == [1, 2, 4, 3]
    assert group_accumulation(8, 4) == 1  # a batch holding two groups
    done = run("train", "grpo", "--rollouts", "llama.cpp", "--reward-kind", "both", "--reward", str(toy / "reward"),
               "--sft", str(toy / "sft"), "--pairs", str(toy / "pairs.jsonl"), "--num-generations", "4",
               "--max-steps", "2", "--max-completion-length", "16", "--base-model", base, "--out", str(toy / "grpo-llama"),
               "--json", db=toy / "sep.db")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["rollouts"] == "llama.cpp" and metrics["rollout_tokens"] > 0
    assert metrics["steps"] == 2 and metrics["rollout_completions"] == 8  # two updates of one group of 4
    assert metrics["groups"] == 2 and metrics["zero_variance_groups"] < 2  # the reward model's scores differ
    assert lora_b_norm(toy / "grpo-llama" / "adapter") > 0


@pytest.mark.slow
def test_best_of_n_picks_the_highest_reward(trained, toy, base, sample_memory, db_path):
    """A server writes the candidates (one 상승, one 하락: what sampling at a temperature may give),
    the reward run scores each in its base's chat format, and the best of the winning label is kept."""
    from fake_openai import FakeOpenAI, cite_all, echo_reason

    from sep.predict import pick

    assert pick([0.1, 2.0, -1.0], ["up", "down", "down"])[:2] == ("down", 1)
    label, best, conf = pick([0.0, 0.0], ["up", "down"])
    assert best == 0 and label == "up" and conf == pytest.approx(0.5)
    sample_memory.conn.close()
    wrong = run("predict", "--stock", "005930", "--date", "2022-06-01", "--best-of", "2", "--reward",
                str(toy / "reward"), "--model", "qwen2.5-coder-1.5b", db=db_path)
    assert wrong.returncode == 2
    assert f"trained on {Path(base).resolve()}, but qwen2.5-coder-1.5b writes the candidates" in wrong.stderr
    answers = iter(["상승", "하락"] * 2)

    def script(kind: str, prompt: str) -> str:
        return cite_all(prompt) if kind == "summarize" else echo_reason(prompt, next(answers))

    with FakeOpenAI(script) as server:
        done = run("predict", "--stock", "005930", "--date", "2022-06-01", "--best-of", "2", "--reward",
                   str(toy / "reward"), "--window-days", "2", "--base-url", server.base_url, "--json", db=db_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    rewards = [c["reward"] for c in out["candidates"]]
    assert sorted(c["label"] for c in out["candidates"]) == ["down", "up"]
    best_label = out["candidates"][out["best"]]["label"]
    assert len(rewards) == 2 and rewards[0] != rewards[1]  # a candidate's own text moves its score
    assert out["label"] == best_label and 0.5 <= out["confidence"] <= 1.0
    assert best_label == out["candidates"][max(range(2), key=lambda i: rewards[i])]["label"]
    assert out["target_day"] == "2022-06-02" and out["actual"] == "down"
    db = open_memory(db_path)
    row = db.execute("SELECT label, method, candidates FROM predictions WHERE method = 'best-of-n'").fetchone()
    assert row[0] == out["label"] and len(json.loads(row[2])) == 2


@pytest.mark.slow
def test_bad_training_input_exits_2(toy, tmp_path):
    nothing = run("train", "reward", "--out", str(tmp_path / "x"), db=tmp_path / "sep.db")  # no file: memory, absent
    assert nothing.returncode == 2 and "No memory database" in nothing.stderr
    both = run("train", "reward", "--pairs", str(toy / "pairs.jsonl"), "--from-memory", db=tmp_path / "sep.db")
    assert both.returncode == 2 and "not both" in both.stderr
    missing = run("train", "sft", "--data", str(tmp_path / "none.jsonl"), db=tmp_path / "sep.db")
    assert missing.returncode == 2
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    bad = run("train", "reward", "--pairs", str(tmp_path / "bad.jsonl"), db=tmp_path / "sep.db")
    assert bad.returncode == 2 and "chosen" in bad.stderr
    open_memory(tmp_path / "empty.db").conn.close()  # a memory with no pairs (not another test's)
    empty = run("train", "reward", "--from-memory", db=tmp_path / "empty.db")
    assert empty.returncode == 2 and "at least 2 pairs" in empty.stderr
