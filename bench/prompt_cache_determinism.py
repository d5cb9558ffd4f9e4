"""Does llama.cpp's prompt cache change a greedy answer? (docs/agents.md, after the re-asks)

    python bench/prompt_cache_determinism.py

One prompt P (1,706 tokens), greedy, 60 tokens, on the default model, each case in a new process:
asked first (twice); asked after a prompt Q that shares P's first tokens (the cache then reuses
them); asked after Q with `cache_prompt` off. Prints the answer, a hash of its log-probs and how
many prompt tokens llama.cpp evaluated.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = ("first", "first", "after another prompt", "after another prompt, cache off")


def ask_one(case: str) -> str:
    from sep.backends.embedded import embedded_chat
    from sep.llm import render_messages
    from sep.models import DEFAULT_MODEL, local_model
    from sep.settings import Settings

    cfg = Settings()
    model = local_model(cfg.cache_dir, DEFAULT_MODEL)
    system = "당신은 주식 분석가입니다. 뉴스 제목을 읽고 다음 날 종가가 오를지 내릴지 한국어로 설명하세요. " * 8

    def prompt(lines: list[str]) -> str:
        news = "삼성전자 뉴스:\n" + "\n".join(lines) + "\n내일 주가는?"
        return render_messages(model.chat_template, [{"role": "system", "content": system}, {"role": "user", "content": news}])

    p = prompt([f"[t{i}] 삼성전자 파운드리 {i}nm 공정 수율 개선, 외국인 순매수 {i * 3}억원" for i in range(40)])
    q = prompt([f"[t{i}] 반도체 업황 둔화 우려, 기관 순매도 {i * 7}억원" for i in range(25)])
    chat = embedded_chat(model, cfg)

    def ask(text: str, cache: bool = True) -> dict:
        return chat._complete(text, max_tokens=60, temperature=0.0, n_probs=5, cache_prompt=cache)

    if case.startswith("after"):
        ask(q)
    reply = ask(p, cache=not case.endswith("cache off"))
    choice = reply["choices"][0]
    digest = hashlib.sha1(json.dumps(choice.get("logprobs"), sort_keys=True).encode()).hexdigest()[:10]
    return f"{case:<32} log-probs {digest}  evaluated {reply.get('timings', {}).get('prompt_n')}  {choice['text']!r}"


def main() -> None:
    if len(sys.argv) > 1:
        print(ask_one(sys.argv[1]))
        return
    for case in CASES:  # a new process each: nothing cached from the case before
        out = subprocess.run([sys.executable, __file__, case], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
