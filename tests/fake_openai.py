"""A scripted OpenAI-compatible server on 127.0.0.1 speaking real HTTP (the only fake: the
LLM server is outside the project). It records every request so tests can inspect prompts."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@functools.lru_cache(maxsize=1)
def _system_openings() -> tuple[tuple[str, str], ...]:
    """(the fixed opening of its system message, agent) for every packaged prompt."""
    from sep.agents import load_prompt

    found = ((load_prompt(lang, name).system.strip().split("{")[0], name)  # the text before any variable
             for lang in ("ko", "en") for name in ("summarize", "explain", "reflect", "judge", "stance", "kind"))
    return tuple((opening, name) for opening, name in found if opening)


def kind_of(body: dict) -> str:
    """Which agent sent a chat request, read from its system message, as a server would have to."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "").strip()
    return next((name for opening, name in _system_openings() if system.startswith(opening)), "explain")


def cite_all(prompt: str, points: int = 5) -> str:
    """A summary that cites the first numbered texts of a summarize prompt, each title as a point."""
    import re

    found = re.findall(r"^\[(\d+)\] (.+)$", prompt, flags=re.M)[:points]
    return "\n".join(f"- {title} [{n}]" for n, title in found)


def echo_reason(prompt: str, label_line: str) -> str:
    """An answer whose reason repeats words of the first summary item, as a grounded model would,
    in the prompt's format: evidence first (the first item cited, pointing the label's way) when
    the prompt shows items with text ids, else the label on the first line."""
    import re

    item = re.search(r"^\[(t\d+)\] (?:\([+0-]\) )?(.+)$", prompt, flags=re.M)  # a derived prompt marks directions
    if item:
        words = " ".join(item.group(2).split()[:3])  # a short quote in a reason of its own, not a paste
        english = label_line.strip() in ("Positive", "Negative")
        sign = "+" if label_line.strip() in ("상승", "Positive") else "-"
        heads = ("Evidence:", "Decision:", "Why:") if english else ("근거:", "판단:", "이유:")
        reason = "news should shift sentiment and move the next close." if english else \
            "소식이 투자 심리를 바꿔 다음 거래일 주가를 움직일 것으로 본다."
        return f"{heads[0]}\n[{item.group(1)}] {sign} {words}\n{heads[1]} {label_line}\n{heads[2]} {words} {reason}"
    line = next((ln for ln in prompt.splitlines() if ln.startswith("[20")), "")
    words = re.sub(r"^\[[\d-]+\]\s*-?\s*", "", line).split()[:6]
    return f"{label_line}\n{' '.join(words) or '정보'} 소식을 반영했다."


def known_skill(truth: dict[str, str], skilled: Callable[[str], bool]) -> Callable[[str, str], str]:
    """A server of set skill: on each decision day (read from the explain prompt) it answers the true
    label when `skilled(day)`, else the other one, with a grounded-looking reason; summaries are fixed."""

    def script(kind: str, prompt: str) -> str:
        if kind == "summarize":
            return "- 삼성전자 관련 보도 [요약]"
        day = re.search(r"(\d{4}-\d{2}-\d{2}) 장 마감 기준", prompt)[1]
        right = truth[day] if skilled(day) else {"up": "down", "down": "up"}[truth[day]]
        return echo_reason(prompt, "상승" if right == "up" else "하락")

    return script


def choice_words(body: dict) -> list[str]:
    """The words a request's structured output allows when it is a choice of a few ((a|b|c)), else []."""
    regex = ((body.get("structured_outputs") or {}).get("regex")) or ""
    word = r"(?:[^()\\|]|\\.)+"  # a backslash escapes one character (re.escape writes "주가\ 흐름")
    found = re.fullmatch(rf"\(({word}(?:\|{word})+)\)", regex)
    return [re.sub(r"\\(.)", r"\1", w) for w in re.findall(word, found.group(1))] if found else []


class FakeOpenAI:
    """`script(kind, prompt) -> reply text`. `owned_by="vllm"` makes it look like vLLM. The stance
    step's requests go to `stance(text) -> positive|neutral|negative` (default: every text neutral,
    so a derived answer's label is the script's own on every day)."""

    def __init__(self, script: Callable[[str, str], str], owned_by: str = "vllm", model: str = "fake-model",
                 latency: float = 0.0, max_model_len: int = 32768, stance: Callable[[str], str] | None = None):
        self.script, self.owned_by, self.model, self.latency = script, owned_by, model, latency
        self.stance = stance or (lambda text: "neutral")
        self.max_model_len = max_model_len  # what vLLM's /tokenize reports; tokens are counted as characters / 2
        self.requests: list[dict] = []
        self.spans: list[tuple[float, float]] = []  # (arrived, replied) per chat request, time.monotonic()
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                if getattr(self, "counted", False):  # done before the client can see the reply and send again
                    with fake._lock:
                        fake.in_flight -= 1
                        fake.spans.append((self.arrived, time.monotonic()))
                    self.counted = False
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send({"object": "list", "data": [{"id": fake.model, "object": "model",
                                                             "owned_by": fake.owned_by}]})
                else:
                    self._send({"error": "not found"}, 404)

            def do_POST(self) -> None:
                if self.path.rstrip("/").endswith("/tokenize") and fake.owned_by == "vllm":  # vLLM's, at the root
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    chars = sum(len(m["content"]) for m in body.get("messages", [])) + len(body.get("prompt", ""))
                    self._send({"count": chars // 2, "max_model_len": fake.max_model_len, "tokens": []})
                    return
                self.arrived = time.monotonic()
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                self.counted = True
                try:
                    self._answer()
                finally:
                    if self.counted:  # no reply was sent (an error)
                        with fake._lock:
                            fake.in_flight -= 1
                            fake.spans.append((self.arrived, time.monotonic()))

            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if fake.latency:
                    time.sleep(fake.latency)
                fake.requests.append(body)
                prompt = body["messages"][-1]["content"]
                kind = kind_of(body)
                text = fake.stance(prompt) if kind == "stance" else fake.script(kind, prompt)
                choices = choice_words(body)
                if choices and isinstance(text, dict):  # a choice with the log-prob the script gives each word
                    said = max(text, key=text.get)
                    logprobs = {"content": [{"token": said, "logprob": text[said], "bytes": None, "top_logprobs": [
                        {"token": w, "logprob": text.get(w, -9.0), "bytes": None} for w in choices]}]}
                    self._reply(said, logprobs, prompt)
                    return
                if choices and text.strip() in choices:  # one word of a few (a stance): a token per word
                    logprobs = {"content": [{"token": text.strip(), "logprob": -0.2, "bytes": None, "top_logprobs": [
                        {"token": w, "logprob": -0.2 if w == text.strip() else -2.5, "bytes": None} for w in choices]}]}
                    self._reply(text.strip(), logprobs, prompt)
                    return
                # the label's token: the first character, or the one after an evidence-first answer's marker
                marked = re.search(r"^(?:판단|Decision):\s*", text, flags=re.M)
                head = text[:marked.end()] if marked else ""
                first = text[len(head):].strip()[:1] or "?"
                other = {"상": "하", "하": "상", "P": "N", "N": "P"}.get(first, "상")
                logprobs = {"content": ([{"token": head, "logprob": -0.1, "bytes": None, "top_logprobs": []}]
                                        if head else []) + [
                    {"token": first, "logprob": -0.2, "bytes": None, "top_logprobs": [
                        {"token": first, "logprob": -0.2, "bytes": None},
                        {"token": other, "logprob": -1.8, "bytes": None}]}]}
                self._reply(text, logprobs, prompt)

            def _reply(self, text: str, logprobs: dict, prompt: str) -> None:
                self._send({
                    "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": fake.model,
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 2, "completion_tokens": len(text) // 2,
                              "total_tokens": (len(prompt) + len(text)) // 2},
                })

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # batch tests and the bench hold dozens of connections at once
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def kinds(self) -> list[str]:
        return [kind_of(r) for r in self.requests]

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
