"""Agent cost on the bundled sample: LLM calls and tokens per stock-day over a 20-day range,
seconds per stock-day on the embedded model, and embedded decode tok/s against raw llama.cpp.

Run: .venv/bin/python bench/agents_cost.py [--days 20] [--trials 3] [--base-url URL]
Without --base-url it uses the embedded model (--model NAME from `sep models list`; default
Qwen2.5-Coder-1.5B). Run it twice, with --model gemma-270m too, to compare on the same days.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sep.agents import Agents
from sep.ingest import import_prices, import_texts
from sep.backends import make_llm
from sep.backends.embedded import EmbeddedChatModel
from sep.memory import open_memory
from sep.sample import sample_files
from sep.settings import Settings
from sep.window import decision_window, trading_days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    cfg = Settings().with_overrides(base_url=args.base_url, model=args.model, threads=args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        db = open_memory(Path(tmp) / "bench.db")
        prices, texts = sample_files()
        import_prices(db, prices)
        import_texts(db, texts)
        days = trading_days(db, "005930").between("2022-05-01", "2022-06-02")[-args.days:]
        llm = make_llm(cfg)
        agents = Agents.for_stock(db, llm, "005930", cfg)
        calls_by_kind: dict[str, int] = {}
        original = llm.ask

        def counting_ask(template, variables, **kw):
            kind = "explain" if kw.get("shape") else (
                "summarize" if "texts" in variables else "reflect")
            calls_by_kind[kind] = calls_by_kind.get(kind, 0) + 1
            return original(template, variables, **kw)

        llm.ask = counting_ask  # type: ignore[method-assign]
        t0 = time.perf_counter()
        correct = 0
        for d in days:
            result = agents.run(decision_window(db, "005930", d, cfg.window_days), args.trials)
            correct += bool(result.trials and result.trials[-1].correct)
        secs = time.perf_counter() - t0
        text_days = db.execute("SELECT count(DISTINCT date) FROM texts WHERE stock='005930' AND date >= ? AND date <= ?",
                               [decision_window(db, "005930", days[0]).window_start, days[-1]]).fetchone()[0]
        n = len(days)
        print(f"backend: {llm.name}; {n} stock-days 005930 {days[0]}..{days[-1]}, trials <= {args.trials}")
        print(f"LLM calls: {llm.calls} total = {llm.calls / n:.2f} per stock-day; by agent {calls_by_kind}")
        print(f"summary calls {calls_by_kind.get('summarize', 0)} <= (stock, day) pairs with texts {text_days}: "
              f"{calls_by_kind.get('summarize', 0) <= text_days}")
        print(f"tokens: {llm.prompt_tokens / n:,.0f} prompt + {llm.completion_tokens / n:,.0f} completion per stock-day")
        print(f"seconds per stock-day: {secs / n:.1f}  (final correct {correct}/{n})")
        from sep.audit import quality_counts

        for q in quality_counts(db, ["005930"], None, None):
            flags = {k: v for k, v in q.items() if k not in ("model", "kind", "n", "flagged") and v}
            print(f"quality gate, {q['kind']}: {q['flagged']}/{q['n']} flagged {flags or ''}")
        row = db.execute("SELECT date, label, explanation, flags FROM predictions WHERE trial = 0 ORDER BY date DESC "
                         "LIMIT 1").fetchone()
        print(f"last forecast ({row[0]}, {row[1]}, flags {row[3]}): {row[2]}")
        if isinstance(llm.chat, EmbeddedChatModel):
            decode_compare(llm.chat)


def decode_compare(chat: EmbeddedChatModel, n_tokens: int = 128) -> None:
    """Decode speed through sep's embedded model vs a raw llama.cpp (xllamacpp) call on the same GGUF
    and the same rendered prompt: llama.cpp's own per-token timing, and wall time per output token."""
    from langchain_core.messages import HumanMessage

    from sep.llm import message_dicts, render_messages

    messages = [HumanMessage("삼성전자 주가 전망에 대해 자세히 설명하세요.")]
    prompt = render_messages(chat.chat_template, message_dicts(messages))
    server = chat._ensure_server()
    t0 = time.perf_counter()
    raw = server.handle_completions({"prompt": prompt, "max_tokens": n_tokens, "temperature": 0,
                                     "repeat_penalty": chat.repeat_penalty})
    raw_wall = (time.perf_counter() - t0) / max(raw["usage"]["completion_tokens"], 1)
    t0 = time.perf_counter()
    msg = chat.invoke(messages, max_tokens=n_tokens)
    sep_wall = (time.perf_counter() - t0) / max(msg.usage_metadata["output_tokens"], 1)
    raw_tps, sep_tps = raw["timings"]["predicted_per_second"], msg.response_metadata["timings"]["predicted_per_second"]
    print(f"decode ({chat.model_name}): raw llama.cpp {raw_tps:.1f} tok/s, sep embedded {sep_tps:.1f} tok/s "
          f"= {sep_tps / raw_tps:.2f}x; wall per output token raw {raw_wall * 1000:.0f} ms, sep {sep_wall * 1000:.0f} ms "
          f"({raw['usage']['completion_tokens']} / {msg.usage_metadata['output_tokens']} tokens)")


if __name__ == "__main__":
    main()
