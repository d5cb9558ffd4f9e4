"""Prompt files (`prompts/<lang>/<agent>.toml`, sep/prompts in a wheel) read into chats.

A prompt is a system message (task and format), optional worked examples as their own
user/assistant turns (never inline, where a small model copies them), then the data. A user's
prompts folder (`--prompts`, SEP_PROMPTS) replaces packaged files one by one. Each file's hash is
its version: part of every cache key that depends on what the model was asked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.prompts import ChatPromptTemplate

from sep.errors import BadInput

PROMPTS_DIR = next(p for p in (Path(__file__).resolve().parent / "prompts",  # inside an installed wheel
                               Path(__file__).resolve().parent.parent / "prompts",  # a checkout: top-level prompts/
                               ) if p.is_dir())


EXPLAIN_FILES = {"derived": "explain_derived", "evidence": "explain", "label": "explain_label"}


def prompt_files(explain_format: str) -> dict[str, str]:
    """Which prompt file each agent reads: the explain format picks explain_derived.toml (the label
    derived from judged evidence), explain.toml (evidence first, the model's label) or explain_label.toml,
    and the reflect prompt: reflect.toml (the misleading item, the overlooked one, a general lesson)
    for answers that cite evidence, reflect_label.toml (a free lesson) for label-first ones; kind.toml
    names the kind of news that misled, for the lesson's template."""
    return {"summarize": "summarize", "explain": EXPLAIN_FILES[explain_format],
            "reflect": "reflect_label" if explain_format == "label" else "reflect", "kind": "kind"}


@dataclass(frozen=True)
class Prompt:
    """One agent's chat prompt: a system message (task and format), optional worked examples as
    their own user/assistant turns (never inline, where a small model copies them), then the data."""

    name: str
    system: str
    turns: tuple[tuple[str, str], ...]  # (role, template) after the examples; the last is the user's
    version: str  # hash of the file: part of the summary cache key
    examples: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns, literal text
    label_after: str = ""  # an evidence-first explain prompt: the label follows this marker (판단:), not line 1
    evidence_head: str = ""  # and its evidence opens with this line (근거:)
    labels: tuple[str, ...] = ()  # a stance prompt: its answer words for positive, neutral, negative
    calibration: dict = field(default_factory=dict, compare=False)  # model name -> log-space bias per label
    lesson: dict = field(default_factory=dict, compare=False)  # a reflect prompt's shape: markers, reasons, none, kinds, templates

    @property
    def template(self) -> ChatPromptTemplate:
        turns = [("system", self.system)]
        for user, assistant in self.examples:  # literal: no variables in examples
            turns += [("human", _literal(user)), ("ai", _literal(assistant))]
        turns += [("ai" if role == "assistant" else "human", text) for role, text in self.turns]
        return ChatPromptTemplate.from_messages(turns)

    def messages(self, **variables: object) -> list[dict]:
        """The chat as role dicts (what is stored with a prediction and what the trainers read)."""
        out = [{"role": "system", "content": self.system.format(**variables)}]
        for user, assistant in self.examples:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out + [{"role": role, "content": text.format(**variables)} for role, text in self.turns]

    def render(self, **variables: object) -> str:
        """The chat as JSON, the form a prediction's `prompt` column keeps."""
        return json.dumps(self.messages(**variables), ensure_ascii=False)

    def instructions(self, **variables: object) -> str:
        """What a generated text must not copy: the system message, the worked examples, and the
        fixed wording of the turns (their data, the variables, may be quoted)."""
        fixed = [part for _, text in self.turns for part in re.split(r"\{[a-z_]+\}", text) if part.strip()]
        return "\n".join([self.system.format(**variables), *(t for pair in self.examples for t in pair), *fixed])


def load_prompt(lang: str, name: str, prompts_dir: Path | None = None) -> Prompt:
    """`<prompts_dir>/<lang>/<name>.toml` if the folder has it, else the packaged file: a `system`
    string, then either a `user` string or `[[turns]]` of {role, content} (a conversation that ends
    with the user), and optional `[[examples]]` of {user, assistant}."""
    path = PROMPTS_DIR / lang / f"{name}.toml"
    if prompts_dir is not None:  # a user folder overrides file by file; what it lacks stays packaged
        if not Path(prompts_dir).is_dir():
            raise BadInput(f"The prompts folder {prompts_dir} does not exist (it holds <lang>/<agent>.toml files, "
                           f"like the packaged prompts/).")
        if (Path(prompts_dir) / lang / f"{name}.toml").exists():
            path = Path(prompts_dir) / lang / f"{name}.toml"
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise BadInput(f"No prompt file {path}; a prompts folder needs <lang>/{name}.toml.") from None
    return _read_prompt(name, path, stamp)


@functools.lru_cache(maxsize=64)
def _read_prompt(name: str, path: Path, stamp: int) -> Prompt:
    """A prompt file parsed once per version on disk (`stamp`): every decision builds its agents."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
        system = data["system"]
        turns = (("user", data["user"]),) if "user" in data else tuple((t["role"], t["content"]) for t in data["turns"])
        if not turns or turns[-1][0] != "user" or any(r not in ("user", "assistant") for r, _ in turns):
            raise KeyError("the last turn must be the user's, and roles are user or assistant")
        examples = tuple((e["user"], e["assistant"]) for e in data.get("examples", []))
        label_after, evidence_head = str(data.get("label_after", "")), str(data.get("evidence_head", ""))
        labels = tuple(str(w) for w in data.get("labels", ()))
        calibration = {str(k): [float(x) for x in v] for k, v in data.get("calibration", {}).items()}
        lesson = dict(data.get("lesson", {}))
        _check_lesson(path, lesson)
    except FileNotFoundError:
        raise BadInput(f"No prompt file {path}; a prompts folder needs <lang>/{name}.toml.") from None
    except BadInput:  # a [lesson] problem, said in its own sentence
        raise
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"The prompt file {path} needs a TOML string `system` and a `user` string or "
                       f"[[turns]] ending with the user's ({exc}).") from None
    return Prompt(name, system, turns, hashlib.sha1(text.encode()).hexdigest()[:12], examples, label_after,
                  evidence_head, labels, calibration, lesson)


def _check_lesson(path: Path, lesson: dict) -> None:
    """A prompt file's [lesson] table, refused in one sentence per problem when the file is read (a bad
    cue pattern here, not in the middle of a run)."""
    def problem(what: str) -> BadInput:
        return BadInput(f"The prompt file {path}: {what}")

    if lesson and (len(lesson.get("markers", ())) != 3 or len(lesson.get("reasons", ())) != 2 or "none" not in lesson):
        raise problem("[lesson] needs markers (3), reasons (2) and none.")
    if lesson.get("templates") and (len(lesson["templates"]) != 2 or not all("{kind}" in t for t in lesson["templates"])
                                    or not lesson.get("kinds")):
        raise problem("[lesson] templates are two strings (one per reason), each with {kind}, beside a list of kinds.")
    if lesson.get("retry") and (len(lesson["retry"]) != 2 or not all("{misled}" in t for t in lesson["retry"])
                                or "{overlooked}" not in str(lesson.get("retry_overlooked", "{overlooked}"))):
        raise problem("[lesson] retry is two strings (one per reason), each with {misled}; retry_overlooked has "
                      "{overlooked}.")
    if lesson.get("hints") and len(lesson["hints"]) != len(lesson.get("kinds", ())):
        raise problem("[lesson] hints say what each kind means: one per kind, in the kinds' order.")
    if lesson.get("cues") and (len(lesson["cues"]) != len(lesson.get("kinds", ()))
                               or not all(isinstance(c, list) for c in lesson["cues"])):
        raise problem("[lesson] cues are one list of patterns per kind, in the kinds' order.")
    for pattern in (c for cues in lesson.get("cues", ()) for c in cues):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise problem(f"the [lesson] cue {pattern!r} is not a regular expression ({exc}).") from None


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def literal_template(messages: list[dict]) -> ChatPromptTemplate:
    """Role dicts (a stored chat) as a template that takes no variables: its braces stay literal."""
    roles = {"system": "system", "user": "human", "assistant": "ai"}
    return ChatPromptTemplate.from_messages([(roles[m["role"]], _literal(m["content"])) for m in messages])


def prompt_text(stored: str) -> str:
    """A stored prompt (JSON chat, or plain text from before migration 0007) for people to read."""
    try:
        messages = json.loads(stored)
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
    except (ValueError, TypeError, KeyError):
        return stored


def write_prompt(prompt: Prompt, path: Path) -> None:
    """A prompt as a prompt file (what a trained run keeps of the prompt it learned on)."""
    def string(text: str) -> str:  # a JSON string is a TOML basic string
        return json.dumps(text, ensure_ascii=False)

    lines = [f"# {prompt.name}: written by sep (version {prompt.version} of the file it came from)"]
    if prompt.labels:
        lines.append("labels = [" + ", ".join(string(w) for w in prompt.labels) + "]")
    for key in ("label_after", "evidence_head"):
        if getattr(prompt, key):
            lines.append(f"{key} = {string(getattr(prompt, key))}")
    lines.append(f"system = {string(prompt.system)}")
    for role, content in prompt.turns:
        lines += ["", "[[turns]]", f"role = {string(role)}", f"content = {string(content)}"]
    for user, assistant in prompt.examples:
        lines += ["", "[[examples]]", f"user = {string(user)}", f"assistant = {string(assistant)}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
