"""The explaining model learns: training on a ChatML (Qwen2) base, the llama.cpp adapter that runs
what was trained at embedded speed, and the bad input around base models and adapters.

A tiny randomly initialised Qwen2 with the real Qwen2.5 tokenizer (tests/tiny.py) keeps these
quick; one slow test trains and answers on the default model itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sep.errors import BadInput
from sep.memory import open_memory
from sep.settings import Settings

from conftest import run
from fake_openai import FakeOpenAI, cite_all

pytestmark = pytest.mark.slow

NEWS = ["반도체 수출 증가", "외국인 순매수 확대", "파운드리 수주 발표", "HBM 공급 계약", "배당 확대 발표", "목표주가 상향"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    with (d / "sft.jsonl").open("w") as f:
        for n in NEWS:
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"삼성전자 뉴스: {n}\n내일 주가는?"}],
                                "completion": f"상승\n{n} 덕분에 오를 것이다."}, ensure_ascii=False) + "\n")
    with (d / "pairs.jsonl").open("w") as f:
        for i, n in enumerate(NEWS):
            f.write(json.dumps({"prompt": f"삼성전자 뉴스: {n}\n내일 주가는?", "chosen": f"상승\n{n} 덕분에 오를 것이다.",
                                "rejected": "하락\n잘 모르겠다.", "ret": 0.01 if i % 2 else -0.02},
                               ensure_ascii=False) + "\n")
    return d


@pytest.fixture(scope="module")
def sft_run(tiny, toy):
    """One SFT run on the tiny ChatML base, shared by the tests that read it (trained once per module)."""
    done = run("train", "sft", "--data", str(toy / "sft.jsonl"), "--base-model", str(tiny[0]), "--max-steps", "2",
               "--learning-rate", "1e-2", "--lora-targets", "all-linear", "--out", str(toy / "sft"), "--json",
               db=toy / "sep.db")
    return toy / "sft", done


def test_the_turn_end_comes_from_each_models_own_template(tiny, test_cache, tmp_path):
    """ChatML ends a turn at <|im_end|>, Gemma at <end_of_turn>: read off the tokenizer, and the
    tokenizer every trainer uses stops (EOS) exactly there. (Gemma's tokenizer is written as
    `prepare_hf_model` writes it, without de-quantizing its weights.)"""
    from sep.backends.policy import chat_format, gguf_tokenizer
    from sep.models import local_model
    from sep.train import TrainingBase, turn_tokenizer

    gguf_tokenizer(local_model(test_cache, "gemma-270m")).save_pretrained(tmp_path / "gemma")
    for folder, end in [(tiny[0], "<|im_end|>"), (tmp_path / "gemma", "<end_of_turn>")]:
        fmt = chat_format(folder)
        assert fmt.turn_end == end
        tok = turn_tokenizer(TrainingBase(str(folder), folder, fmt))
        assert tok.eos_token_id == tok.convert_tokens_to_ids(end) and tok.eos_token_id != tok.unk_token_id
        assert fmt.response("상승\n이유") == "상승\n이유" + end


def test_the_gguf_adapter_and_peft_give_the_same_greedy_tokens(tiny, tmp_path):
    """The adapter sep writes for llama.cpp is the PEFT adapter: same prompt, same greedy text, on
    an f32 base (the tiny Qwen2), through the embedded engine sep runs. Without the adapter both
    say something else, so the adapter is what decides."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sep.adapters import read_adapter, write_gguf_adapter
    from sep.backends.embedded import EmbeddedChatModel
    from sep.backends.policy import chat_format

    folder, gguf = tiny
    tok = AutoTokenizer.from_pretrained(folder)
    # a short chat: llama.cpp keeps its KV cache in f16, and a random model turns that rounding into a
    # different argmax after a few dozen positions (trained models have margins; this one has none)
    prompt = chat_format(folder).prompt([{"role": "system", "content": "분석가"}, {"role": "user", "content": "내일 주가는?"}])
    ids = tok(prompt, return_tensors="pt").input_ids

    def hf_greedy(model) -> str:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        return tok.decode(out[0, ids.shape[1]:])

    def llama_greedy(lora: list[str]) -> str:
        chat = EmbeddedChatModel(model_name="tiny", model_path=str(gguf), chat_template=tok.chat_template, n_ctx=512,
                                 lora=lora)
        reply = chat._complete(prompt, max_tokens=16, temperature=0.0, ignore_eos=True)
        return reply["choices"][0]["text"]

    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    plain = hf_greedy(base)
    torch.manual_seed(1)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                           init_lora_weights=False)).eval()  # random B: an adapter that matters
    tuned = hf_greedy(peft)
    peft.save_pretrained(tmp_path / "adapter")
    written = write_gguf_adapter(tmp_path / "adapter", folder)
    assert read_adapter(tmp_path / "adapter").gguf == written
    assert tuned != plain
    assert llama_greedy([]) == plain
    assert llama_greedy([str(written)]) == tuned


def test_sft_on_a_chatml_base_folder_records_it_and_writes_both_adapters(tiny, toy, sft_run):
    """`--base-model DIR` trains that folder as it is: its template renders the prompts, every linear
    layer gets LoRA (`--lora-targets all-linear`), the run records the base, and the adapter comes as
    PEFT and as llama.cpp GGUF."""
    from safetensors.torch import load_file

    db = toy / "sep.db"
    _, done = sft_run
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["steps"] == 2 and metrics["gguf_adapter"].endswith("adapter/adapter.gguf")
    assert json.loads((toy / "sft" / "config.json").read_text())["base_model"] == str(tiny[0].resolve())
    assert open_memory(db).execute("SELECT base_model FROM runs WHERE out = ?", [str(toy / "sft")]).fetchone()[0] \
        == str(tiny[0].resolve())  # the module's other runs (the reward head) share this memory
    weights = load_file(str(toy / "sft" / "adapter" / "adapter_model.safetensors"))
    layers = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights}
    assert layers == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # all-linear
    assert sum(float(t.abs().sum()) for k, t in weights.items() if "lora_B" in k) > 0  # B starts at zero: it moved


def test_ppo_on_chatml_stops_at_im_end_and_penalises_only_a_missing_one(tiny, toy):
    """PPO on a Qwen2 base: the rollouts' stop token and the missing-EOS check are <|im_end|>; a
    rollout that ends its turn is not penalised, one that never does is (TRL's own functions)."""
    from trl.experimental.ppo.ppo_trainer import truncate_response

    from sep.train import TrainingBase, turn_tokenizer

    base = TrainingBase.resolve(Settings(), tiny[0])
    tok = turn_tokenizer(base)
    assert tok.eos_token == "<|im_end|>"
    ended = tok("상승\n수출 증가<|im_end|>\n<|im_start|>user\n더", add_special_tokens=False, return_tensors="pt").input_ids
    open_ended = tok("상승\n수출 증가 덕분에 오를", add_special_tokens=False, return_tensors="pt").input_ids
    responses = [truncate_response(tok.eos_token_id, tok.pad_token_id, r) for r in (ended, open_ended)]
    has_eos = [bool((r == tok.eos_token_id).any()) for r in responses]  # TRL's check before the penalty
    assert has_eos == [True, False]
    assert tok.decode(responses[0][0]).startswith("상승\n수출 증가<|im_end|>")  # cut right after the turn end

    db = toy / "sep.db"
    reward = run("train", "reward", "--pairs", str(toy / "pairs.jsonl"), "--base-model", str(tiny[0]), "--max-steps",
                 "2", "--out", str(toy / "rm"), "--json", db=db)
    assert reward.returncode == 0, reward.stderr[-3000:]
    ppo = run("train", "ppo", "--reward-kind", "model", "--reward", str(toy / "rm"), "--pairs", str(toy / "pairs.jsonl"), "--base-model",
              str(tiny[0]), "--max-steps", "1", "--response-length", "8", "--out", str(toy / "ppo"), "--json", db=db)
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    assert json.loads(ppo.stdout)["updates"] == 1


def test_the_embedding_reward_head_learns_in_seconds_and_scores_best_of_n(toy):
    """`--head embedding`: a Bradley–Terry head on the default model's pooled GGUF embedding. On the
    toy pairs (chosen names the news, rejected shrugs) it ranks the held-out last pairs right, says
    what a scored candidate costs, and the reward best-of-n loads scores the same way."""
    from sep.train import EmbeddingReward, finished_run, load_reward

    done = run("train", "reward", "--head", "embedding", "--pairs", str(toy / "pairs.jsonl"), "--out",
               str(toy / "head"), "--json", db=toy / "sep.db")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["head"] == "embedding" and metrics["eval_pairs"] == 1 and metrics["train_pairs"] == len(NEWS) - 1
    assert metrics["pair_accuracy"] == 1.0 and metrics["majority_accuracy"] is not None
    assert 0 < metrics["seconds_per_candidate"] < 30
    # it has no adapter, yet it is a finished run an experiment reuses (PPO's reward on a laptop: jobs' reward_head)
    assert finished_run(toy / "head") and not finished_run(toy)
    reward = load_reward(toy / "head", Settings())
    assert isinstance(reward, EmbeddingReward) and reward.base == "qwen2.5-coder-1.5b"
    chosen, rejected = reward.scores("삼성전자 뉴스: 자사주 매입 결정\n내일 주가는?",
                                     ["상승\n자사주 매입 결정 덕분에 오를 것이다.", "하락\n잘 모르겠다."])
    assert chosen > rejected  # a pair it never saw
    for args, said in ((["--reward", str(toy / "head")], "read only with --reward-kind model or both"),
                       (["--reward-kind", "both"], "needs --reward DIR")):
        refused = run("train", "ppo", *args, "--pairs", str(toy / "pairs.jsonl"), db=toy / "sep.db")
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr


def test_bad_base_models_and_adapters_exit_2_with_one_sentence(tiny, toy, sft_run, tmp_path, sample_memory, db_path):
    from sep.adapters import read_adapter

    sft, done = sft_run
    assert done.returncode == 0, done.stderr[-3000:]
    db = tmp_path / "sep.db"
    unknown = run("train", "sft", "--data", str(toy / "sft.jsonl"), "--base-model", "llama-70b", db=db)
    assert unknown.returncode == 2 and "neither a catalog name" in unknown.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny[0] / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).write_text((tiny[0] / name).read_text())
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    no_template = run("train", "sft", "--data", str(toy / "sft.jsonl"), "--base-model", str(bare), db=db)
    assert no_template.returncode == 2 and "no chat template" in no_template.stderr
    other = run("train", "grpo", "--sft", str(sft), "--pairs", str(toy / "pairs.jsonl"), "--base-model", "gemma-270m",
                "--out", str(tmp_path / "grpo"), db=db)
    assert other.returncode == 2 and f"--sft {sft} was trained on {tiny[0].resolve()}, not on gemma-270m" in other.stderr
    sample_memory.conn.close()
    assert read_adapter(sft).base_model == str(tiny[0].resolve())
    elsewhere = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--policy", str(sft), "--model",
                    "gemma-270m", db=db_path)
    assert elsewhere.returncode == 2 and "was trained on" in elsewhere.stderr and "can't run on --model gemma-270m" in elsewhere.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (sft / "adapter").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "adapter_model.safetensors").read_bytes()
    (broken / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    cut = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--policy", str(broken), db=db_path)
    assert cut.returncode == 2 and "corrupt or truncated" in cut.stderr and "Traceback" not in cut.stderr
    with FakeOpenAI(lambda kind, p: cite_all(p) if kind == "summarize" else "상승\n수출", model="base-model") as server:
        unserved = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--policy", "sft", "--base-url",
                       server.base_url, db=db_path)
    assert unserved.returncode == 2 and "lists no model sft (it lists base-model)" in unserved.stderr


def test_policy_name_on_a_server_is_sent_as_the_model(sample_memory, db_path):
    """`--policy NAME --base-url URL` asks the server's LoRA module NAME (vLLM's --lora-modules NAME=DIR)."""
    with FakeOpenAI(lambda kind, p: cite_all(p) if kind == "summarize" else "상승\n수출 증가 소식", model="sft") as server:
        sample_memory.conn.close()
        done = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--trials", "1", "--policy", "runs/sft",
                   "--base-url", server.base_url, "--json", db=db_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert {r["model"] for r in server.requests} == {"sft"}
    assert open_memory(db_path).execute("SELECT DISTINCT model FROM predictions").fetchall() == [(f"sft@{server.base_url}",)]


def test_the_default_model_trains_and_answers_through_its_adapter(sample_memory, db_path, tmp_path):
    """One SFT step on Qwen2.5-Coder-1.5B itself, then `sep reflect --policy` answers embedded with
    the base GGUF plus the run's llama.cpp adapter, and the answer passes the quality gate."""
    from sep.agents import Agents
    from sep.backends import make_llm
    from sep.window import decision_window

    window = decision_window(sample_memory, "005930", "2022-05-31", 2)
    agents = Agents.for_stock(sample_memory, None, "005930", Settings(summarizer="extractive"))
    variables = agents.explain_variables(window, agents.summaries(window), [])
    prompt = json.loads(agents.prompts["explain"].render(**variables))  # the real explain chat of 05-31
    with (tmp_path / "sft.jsonl").open("w") as f:
        first = variables["_items"][0]["item"]  # an evidence-first answer, as the prompt asks
        f.write(json.dumps({"prompt": prompt, "completion": f"근거:\n[{first}] - 반도체 기대 약화\n판단: 하락\n"
                                                            "이유: 외국인 매도와 금리 부담이 반도체 기대를 눌렀다."},
                           ensure_ascii=False) + "\n")
    sample_memory.conn.close()
    done = run("train", "sft", "--data", str(tmp_path / "sft.jsonl"), "--max-steps", "1", "--batch-size", "1",
               "--lora-layers", "8", "--out", str(tmp_path / "sft"), "--json", db=db_path)  # 8 of 28 blocks: twice as fast
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["base_model"] == "qwen2.5-coder-1.5b"
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "sft" / "adapter" / "adapter_model.safetensors"))
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    llm = make_llm(Settings(policy=tmp_path / "sft"))
    assert llm.chat.lora == [metrics["gguf_adapter"]] and llm.chat.model_name == "qwen2.5-coder-1.5b"
    answered = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--policy", str(tmp_path / "sft"),
                   "--trials", "1", "--window-days", "2", "--summarizer", "extractive", "--json", db=db_path,
                   env={"SEP_MODEL": ""})
    assert answered.returncode == 0, answered.stderr[-3000:]
    trial = json.loads(answered.stdout)[0]["trials"][0]
    # grounded, cited, in the format; whether its label agrees with its own evidence is the model's judgement
    # (it disagrees on most days: stance_mismatch, README), not the adapter's
    assert trial["label"] in ("up", "down") and trial["evidence"] and len(trial["explanation"]) > 20
    assert set(trial["flags"]) <= {"stance_mismatch"}, trial


def test_a_cpu_trains_in_bf16_only_where_it_multiplies_bf16_in_hardware(tmp_path, monkeypatch, db_path):
    """bf16 autocast ran the default model's forward and backward passes 2.5x faster than fp32 on AMX
    cores, and about 100x slower on a CPU without bf16 units: `--precision auto` reads the CPU's flags."""
    import sep.train.run
    from sep.train.config import SFTRunConfig
    from sep.train.run import native_bf16, precision

    (tmp_path / "amx").write_text("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    (tmp_path / "avx2").write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert native_bf16(tmp_path / "amx") and not native_bf16(tmp_path / "avx2")
    assert not native_bf16(tmp_path / "missing")
    monkeypatch.setattr(sep.train.run, "cpu_only", lambda: True)
    for hardware in (True, False):
        monkeypatch.setattr(sep.train.run, "native_bf16", lambda: hardware)
        assert precision("auto") == {"use_cpu": True, "bf16": hardware, "fp16": False}
        assert precision("fp32")["bf16"] is False and precision("bf16")["bf16"] is True
    monkeypatch.setattr(sep.train.run, "cpu_only", lambda: False)
    assert precision("auto") == {"use_cpu": False} and precision("fp32") == {"use_cpu": False, "bf16": False}
    with pytest.raises(BadInput, match="--precision must be auto, fp32 or bf16, not 'fp16'"):
        SFTRunConfig(precision="fp16")
    (tmp_path / "sft.jsonl").write_text(json.dumps({"prompt": "뉴스", "completion": "상승"}) + "\n")
    done = run("train", "sft", "--precision", "fp16", "--data", str(tmp_path / "sft.jsonl"), db=db_path)
    assert done.returncode == 2 and "--precision must be" in done.stderr


def test_a_trainer_that_would_not_fit_says_so_before_loading(tiny, toy, qwen_hf, monkeypatch):
    """One fp32 copy of the 1.5B default model fits a 24 GB laptop (SFT measured at 9.8 GB on 1,143
    tokens), and so does PPO, which holds one base; a model-head reward run adds a second copy; GRPO's long
    prompts count. Short of memory, a run stops in one sentence, before loading."""
    import sep.train.base
    from sep.train import TrainingBase, check_memory, estimated_peak

    gib = 1 << 30
    assert 9.8e9 < estimated_peak("sft", qwen_hf, 1, 1143) < 12 * gib  # above the measured peak, not far
    qwen = TrainingBase.resolve(Settings(), qwen_hf)
    monkeypatch.setattr(sep.train.base, "available_memory", lambda: 14 * gib)
    monkeypatch.setattr(sep.train.base, "cpu_only", lambda: True)
    assert check_memory("ppo", qwen, 1, 1143 + 160) < 14 * gib  # one base: policy, reference and value
    with pytest.raises(BadInput, match="2 model copies"):
        check_memory("ppo", qwen, 1, 1143 + 160, extra_copies=1)  # + a model-head reward run
    # GRPO keeps the completions' logits only, yet runs over prompt and completion: 4 x 160 tokens after
    # the longest real explain prompt (1,743 tokens) peaked at 18.8 GB, where the estimate once said 9.4
    assert 18.8e9 < estimated_peak("grpo", qwen_hf, 4, 160, positions=1743 + 160) < 20 * gib
    assert check_memory("grpo", qwen, 4, 160, positions=300 + 160) < 14 * gib  # short prompts fit
    with pytest.raises(BadInput, match="activations of 4 x 1903 positions"):
        check_memory("grpo", qwen, 4, 160, positions=1743 + 160)
    monkeypatch.setattr(sep.train.base, "available_memory", lambda: 1 << 20)
    done = run("train", "sft", "--data", str(toy / "sft.jsonl"), "--base-model", str(tiny[0]), "--out",
               str(toy / "nofit"), db=toy / "sep.db")
    assert done.returncode == 2 and "would need about" in done.stderr and "GiB is free" in done.stderr
    assert not (toy / "nofit" / "config.json").exists()  # nothing written
