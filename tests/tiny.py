"""A tiny randomly initialised Qwen2 (ChatML, the real Qwen2.5 tokenizer) as a transformers folder and
as an f32 GGUF, so adapter tests run on the default model's architecture in seconds.

The GGUF is written the way llama.cpp's converter writes a Qwen2 (no weight permutation; tied
embeddings carry no output tensor), with the tokenizer copied from the packaged Qwen GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

from sep.models import LocalModel

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128

NEWS = ["반도체 수출 증가", "외국인 순매수 확대", "파운드리 수주 발표", "HBM 공급 계약", "배당 확대 발표",
        "신제품 출시 호평", "목표주가 상향", "메모리 가격 반등", "자사주 매입 결정", "영업이익 증가"]


def toy_sets(folder: Path) -> tuple[Path, Path]:
    """(pairs.jsonl, sft.jsonl) the trainers learn on the tiny model: separable on purpose, chosen
    answers name the news and rejected ones shrug; each pair carries a return for the market reward."""
    pairs, sft = folder / "pairs.jsonl", folder / "sft.jsonl"
    with pairs.open("w") as p, sft.open("w") as s:
        for i, n in enumerate(NEWS):
            p.write(json.dumps({"prompt": f"삼성전자 2022-05-{i + 2:02d} 뉴스: {n}\n내일 주가는?",
                                "chosen": f"상승\n{n} 덕분에 오를 것이다.", "rejected": "하락\n잘 모르겠다.",
                                "ret": 0.01 if i % 2 else -0.02}, ensure_ascii=False) + "\n")
            s.write(json.dumps({"prompt": f"삼성전자 뉴스: {n}\n내일 주가는?", "completion": f"상승\n{n} 덕분에 오를 것이다."},
                               ensure_ascii=False) + "\n")
    return pairs, sft


def tiny_qwen(out: Path, qwen: LocalModel, seed: int = 0) -> tuple[Path, Path]:
    """(transformers folder, GGUF file) of a 2-layer Qwen2 with random weights; the tokenizer is
    read off the packaged GGUF (no de-quantized 1.5B folder needed) with the chat template sep renders."""
    import gguf
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sep.adapters import gguf_tensor_name
    from sep.backends.policy import gguf_tokenizer

    torch.manual_seed(seed)
    reader = gguf.GGUFReader(qwen.path)
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    config = Qwen2Config(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, intermediate_size=FFN, max_position_embeddings=512,
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.3,
                         bos_token_id=151643, eos_token_id=151645)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # biases and norms away from their init, so every tensor's name mapping matters
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = out / "tiny-qwen2"
    model.save_pretrained(folder)
    gguf_tokenizer(qwen).save_pretrained(folder)

    path = out / "tiny-qwen2.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(LAYERS)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), kind, sub_type=sub)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied to the embeddings
            continue
        writer.add_tensor(gguf_tensor_name("qwen2", LAYERS, name), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder, path
