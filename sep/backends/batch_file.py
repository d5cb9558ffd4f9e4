"""An OpenAI Batch API requests file answered by the embedded model (`sep batch execute`): the offline
path without a GPU. Each request's structured output (the regex sep wrote) is held by llama.cpp's
grammar, and the results file is the one a Batch API would return, so `sep batch ingest` reads either."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sep.errors import BadInput
from sep.settings import Progress, Settings


def _requests_lines(requests: Path) -> list[dict]:
    """The lines of an OpenAI Batch API requests file, each with a custom_id and a body."""
    try:
        lines = [json.loads(line) for line in requests.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise BadInput(f"Can't read the requests file {requests}: {exc.strerror}.") from None
    except ValueError:
        raise BadInput(f"{requests} is not a JSONL requests file (one JSON request per line).") from None
    if not all(isinstance(r, dict) and "custom_id" in r and isinstance(r.get("body"), dict) for r in lines):
        raise BadInput(f"{requests}: every line needs custom_id and body (the OpenAI Batch API format).")
    return lines


def _answered_ids(out: Path) -> set[str]:
    """The custom_ids a results file already answers (a line cut by a kill is asked again)."""
    done = set()
    if out.exists():
        for line in out.read_text(encoding="utf-8").splitlines():
            try:
                done.add(json.loads(line)["custom_id"])
            except (ValueError, KeyError, TypeError):
                pass
    return done


def _result_line(i: int, custom_id: str, model: str, message: Any) -> dict:
    """One answered request as the OpenAI Batch API writes it: a chat completion with its log-probs and usage."""
    usage = message.usage_metadata or {}
    return {"id": f"batch-{i}", "custom_id": custom_id, "error": None, "response": {
        "status_code": 200, "request_id": f"sep-{i}", "body": {
            "id": f"chatcmpl-sep-{i}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{
                "index": 0, "finish_reason": "stop", "logprobs": message.response_metadata.get("logprobs"),
                "message": {"role": "assistant", "content": message.content}}],
            "usage": {"prompt_tokens": usage.get("input_tokens", 0),
                      "completion_tokens": usage.get("output_tokens", 0),
                      "total_tokens": usage.get("total_tokens", 0),
                      "prompt_tokens_details": {"cached_tokens": (usage.get("input_token_details") or {})
                                                .get("cache_read", 0)}}}}}


def execute(requests: Path, out: Path, cfg: Settings,
            on_progress: Progress | None = None) -> dict:
    """Run a requests file on the embedded model and write an OpenAI Batch API results file: the
    offline path without a GPU. The label is held to the body's structured output by llama.cpp's
    grammar; lines already in `out` are kept (a killed run resumes)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from sep.backends.embedded import embedded_chat
    from sep.models import ModelNotFound, local_model
    from sep.shapes import shape_from_regex

    lines = _requests_lines(requests)
    done = _answered_ids(out)
    name, model_file = cfg.model, cfg.model_file
    if name and (name.endswith(".gguf") or Path(name).is_file()):  # --model-file PATH arrives as --model
        name, model_file = None, Path(name)
    try:
        model = local_model(cfg.cache_dir, name, model_file)
    except ModelNotFound as exc:
        raise BadInput(str(exc)) from None
    chat = embedded_chat(model, cfg)
    roles = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    todo = [r for r in lines if r["custom_id"] not in done]
    report = {"requests": len(lines), "already": len(lines) - len(todo), "answered": 0, "failed": 0,
              "model": model.name}
    progress = on_progress or (lambda stage, i, n: None)
    progress("requests", 0, len(todo))
    with out.open("a", encoding="utf-8") as f:
        for i, r in enumerate(todo, 1):
            body = r["body"]
            regex = (body.get("structured_outputs") or {}).get("regex")
            shape = shape_from_regex(regex) if regex else None
            kwargs = {k: body[k] for k in ("temperature", "seed") if body.get(k) is not None}
            if body.get("max_completion_tokens", body.get("max_tokens")) is not None:  # langchain sends the first
                kwargs["max_tokens"] = body.get("max_completion_tokens", body.get("max_tokens"))
            try:
                if regex and shape is None:
                    raise ValueError("its structured output is not one sep wrote")
                messages = [roles[m["role"]](m["content"]) for m in body["messages"]]
                message = chat.invoke(messages, stop=body.get("stop"), answer_shape=shape, **kwargs)
                line = _result_line(i, r["custom_id"], model.name, message)
                report["answered"] += 1
            except (KeyError, ValueError, TypeError) as exc:
                line = {"id": f"batch-{i}", "custom_id": r["custom_id"], "response": None,
                        "error": {"code": "bad_request", "message": f"{type(exc).__name__}: {exc}"}}
                report["failed"] += 1
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()
            progress("requests", i, len(todo))
    return report
