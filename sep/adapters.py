"""Trained LoRA adapters: the PEFT folder `sep train` writes, its llama.cpp GGUF twin, and its base.

A run's `adapter/` is a PEFT adapter, which vLLM serves as it is (`--enable-lora --lora-modules`).
llama.cpp reads LoRA only as GGUF, so every causal-LM run also writes `adapter/adapter.gguf`:
the same A and B matrices under llama.cpp's tensor names (`blk.N.attn_q.weight.lora_a`), with
`general.type = adapter` and the LoRA alpha, as llama.cpp's own converter writes them. The
embedded engine then runs the base GGUF plus this file at the base model's speed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sep.errors import BadInput

GGUF_NAME = "adapter.gguf"
LEGACY_BASE = "gemma-270m"  # what every run trained before sep recorded `base_model` learned on

# transformers' model_type -> llama.cpp's architecture name, for the architectures whose linear
# weights llama.cpp stores exactly as transformers does (llama/mistral permute q and k: not here).
ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3", "gemma3": "gemma3", "gemma2": "gemma2",
                 "gemma": "gemma", "phi3": "phi3"}


@dataclass(frozen=True)
class Adapter:
    """A checked LoRA adapter folder: what base it was trained on, its rank, and its GGUF twin if written."""

    folder: Path
    base_model: str | None  # the catalog name or model folder its run was trained on (None: not a sep run)
    rank: int
    alpha: float
    task: str
    gguf: Path | None


def adapter_folder(path: Path) -> Path | None:
    """The LoRA adapter in `path`: a `sep train` run folder's `adapter/`, or the folder itself; None if neither."""
    path = Path(path)
    folder = path / "adapter" if (path / "adapter").is_dir() else path
    return folder if (folder / "adapter_config.json").exists() else None


def run_config(path: Path | None) -> dict:
    """A `sep train` run's config.json (from the run folder or its adapter/), or {} for anything else."""
    if path is None:
        return {}
    path = Path(path)
    for folder in (path, path.parent):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if "kind" in config:  # a sep run's config, not a transformers model's
            return config
    return {}


def run_base(path: Path) -> str:
    """The base a `sep train` run learned on (its config.json); runs from before sep recorded it were
    trained on Gemma-3 270M. One sentence when `path` is no run at all."""
    config = run_config(path)
    if not config and adapter_folder(path) is None:
        raise BadInput(f"{path} is not a `sep train` run folder (no config.json) or LoRA adapter.")
    return config.get("base_model") or LEGACY_BASE


def read_adapter(path: Path) -> Adapter:
    """The adapter of a run folder (or an adapter folder), checked so a broken one fails in one sentence.

    A truncated or corrupt `adapter_model.safetensors` or `adapter.gguf` is refused here, before
    any model loads."""
    folder = adapter_folder(path)
    if folder is None:
        raise BadInput(f"{path} is not a `sep train` run folder or LoRA adapter (no adapter_config.json).")
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{folder}/adapter_config.json is not a readable LoRA config ({type(exc).__name__}: {exc}).") from None
    weights = folder / "adapter_model.safetensors"
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "np") as f:
            for key in f.keys():
                f.get_tensor(key)  # reads every byte: a truncated file fails here
    except ImportError:
        pass
    except Exception as exc:  # safetensors raises its own error types for a bad header or short data
        raise BadInput(f"{weights} is corrupt or truncated ({type(exc).__name__}: {exc}); train the run again.") from None
    gguf_path = folder / GGUF_NAME
    if gguf_path.exists():
        try:
            from gguf import GGUFReader

            reader = GGUFReader(gguf_path)
            kind = reader.fields.get("general.type")
            if kind is None or bytes(kind.parts[kind.data[0]]).decode() != "adapter":
                raise ValueError("general.type is not 'adapter'")
        except Exception as exc:
            raise BadInput(f"{gguf_path} is not a readable llama.cpp LoRA adapter ({exc}); delete it and rerun "
                           f"`sep train` with the same --out, or write it again with sep.adapters.write_gguf_adapter.") from None
    base = run_config(path).get("base_model") or run_config(folder).get("base_model")
    return Adapter(folder, base, rank, alpha, str(config.get("task_type") or ""), gguf_path if gguf_path.exists() else None)


def gguf_arch(base: Path) -> tuple[str, int]:
    """(llama.cpp architecture, number of blocks) of a transformers model folder."""
    config = json.loads((Path(base) / "config.json").read_text())
    config = config.get("text_config", config)
    kind = config.get("model_type", "")
    if kind not in ARCHITECTURES:
        raise BadInput(f"sep can't write a llama.cpp adapter for a {kind or 'unknown'} model yet (it can for "
                       f"{', '.join(sorted(set(ARCHITECTURES)))}); serve the PEFT adapter with vLLM instead.")
    return ARCHITECTURES[kind], int(config["num_hidden_layers"])


def gguf_tensor_name(arch: str, blocks: int, hf_name: str) -> str:
    """llama.cpp's name for a transformers weight (`model.layers.0.self_attn.q_proj.weight` → `blk.0.attn_q.weight`)."""
    import gguf

    arch_id = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    name = gguf.get_tensor_name_map(arch_id, blocks).get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise BadInput(f"llama.cpp has no {arch} tensor for {hf_name}.")
    return name


def write_gguf_adapter(adapter: Path, base: Path, out: Path | None = None) -> Path:
    """Write the PEFT adapter in `adapter` as a llama.cpp LoRA GGUF (f32) beside it; return its path.

    `base` is the transformers folder it was trained on (its config names the architecture).
    Written under a temporary name and renamed, so a half-written adapter never loads."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter = Path(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    arch, blocks = gguf_arch(base)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in load_file(str(adapter / "adapter_model.safetensors")).items():
        side = "lora_a" if ".lora_A." in key else "lora_b" if ".lora_B." in key else None
        if side is None:
            raise BadInput(f"{adapter} holds {key}, which is not a LoRA A/B matrix; llama.cpp can't apply it.")
        hf_name = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight").replace(".lora_B.weight", ".weight")
        pairs.setdefault(gguf_tensor_name(arch, blocks, hf_name), {})[side] = tensor.astype(np.float32)  # f16 measured slower here
    out = Path(out) if out else adapter / GGUF_NAME
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for name, ab in sorted(pairs.items()):
        if set(ab) != {"lora_a", "lora_b"}:
            raise BadInput(f"{adapter} has only {', '.join(ab)} for {name}.")
        writer.add_tensor(f"{name}.lora_a", ab["lora_a"])  # (r, in): llama.cpp reverses the dims
        writer.add_tensor(f"{name}.lora_b", ab["lora_b"])  # (out, r)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(out)
    return out


def run_data_end(path: Path | None) -> str | None:
    """The last day a `sep train` run may have seen an outcome of (its `data_end`), if it recorded one."""
    return run_config(path).get("data_end")

