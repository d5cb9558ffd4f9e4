"""Agent cost on the bundled sample: LLM calls and tokens per stock-day over a 20-day range,
seconds per stock-day on the embedded model, and embedded decode tok/s against raw llama.cpp.

Tokens are counted as a server bills a request (the prompt once, however many llama.cpp calls
the grammar takes), split into what llama.cpp's prompt cache served and what it computed, for the
forecast alone (the day's new summaries and trial 0) and with reflection (lessons and retries).

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
    parser.add_argument("--dedup", action="store_true",
                        help="deduplicate the sample first, as `sep demo` and jobs/sample.toml do (each day's top 10)")
    args = parser.parse_args()
    cfg = Settings().with_overrides(base_url=args.base_url, model=args.model, threads=args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        db = open_memory(Path(tmp) / "bench.db")
        prices, texts = sample_files()
        import_prices(db, prices)
        import_texts(db, texts)
        if args.dedup:
            from sep.dedup import DedupConfig, Deduplicator

            Deduplicator(db, DedupConfig.from_settings(cfg), threads=cfg.threads).run("005930")
        days = trading_days(db, "005930").between("2022-05-01", "2022-06-02")[-args.days:]
        llm = make_llm(cfg)
        agents = Agents.for_stock(db, llm, "005930", cfg)
        calls_by_kind: dict[str, int] = {}
        # a day's forecast is its summaries and its first explain; the lessons and retries come after
        cost = {part: {"sent": 0, "cached": 0, "completion": 0, "seconds": 0.0} for part in ("forecast", "reflection")}
        original = llm.ask
        explained: set[str] = set()

        def counting_ask(template, variables, **kw):
            kind = kw.get("agent") or "explain"
            calls_by_kind[kind] = calls_by_kind.get(kind, 0) + 1
            part = "forecast" if kind == "summarize" or (kind == "explain" and day[0] not in explained) else "reflection"
            if kind == "explain":
                explained.add(day[0])
            before = (llm.prompt_tokens, llm.prompt_cached, llm.completion_tokens, time.perf_counter())
            try:
                return original(template, variables, **kw)
            finally:
                c = cost[part]
                c["sent"] += llm.prompt_tokens - before[0]
                c["cached"] += llm.prompt_cached - before[1]
                c["completion"] += llm.completion_tokens - before[2]
                c["seconds"] += time.perf_counter() - before[3]

        llm.ask = counting_ask  # type: ignore[method-assign]
        t0 = time.perf_counter()
        correct = 0
        day = [""]
        for d in days:
            day[0] = d
            result = agents.run(decision_window(db, "005930", d, cfg.window_days), args.trials)
            correct += bool(result.trials and result.trials[-1].correct)
        secs = time.perf_counter() - t0
        text_days = db.execute("SELECT count(DISTINCT date) FROM texts WHERE stock='005930' AND date >= ? AND date <= ?",
                               [decision_window(db, "005930", days[0]).window_start, days[-1]]).fetchone()[0]
        n = len(days)
        print(f"backend: {llm.name}; {n} stock-days 005930 {days[0]}..{days[-1]}, trials <= {args.trials}"
              + ("; deduplicated first" if args.dedup else ""))
        print(f"LLM calls: {llm.calls} total = {llm.calls / n:.2f} per stock-day; by agent {calls_by_kind}")
        print(f"summary calls {calls_by_kind.get('summarize', 0)} <= (stock, day) pairs with texts {text_days}: "
              f"{calls_by_kind.get('summarize', 0) <= text_days}")
        def line(label: str, parts: list[str]) -> str:
            sent = sum(cost[p]["sent"] for p in parts)
            cached = sum(cost[p]["cached"] for p in parts)
            return (f"{label}: {sent / n:,.0f} prompt tokens per stock-day ({cached / n:,.0f} from the prompt cache, "
                    f"{(sent - cached) / n:,.0f} computed) + {sum(cost[p]['completion'] for p in parts) / n:,.0f} "
                    f"completion; {sum(cost[p]['seconds'] for p in parts) / n:.1f} s per stock-day")

        print(line("forecast (summaries + trial 0)", ["forecast"]))
        print(line(f"with reflection (trials <= {args.trials})", ["forecast", "reflection"]))
        print(f"seconds per stock-day, all: {secs / n:.1f}  (final correct {correct}/{n})")
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
