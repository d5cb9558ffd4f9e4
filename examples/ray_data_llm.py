"""Run a `sep batch export` file on a Ray cluster with Ray Data LLM, and write a results file that
`sep batch ingest` reads (the OpenAI Batch API output format).

Two ways, both from the same exported file:

* `--url URL` (default): every exported body is POSTed as it is to OpenAI-compatible servers
  (`vllm serve` replicas behind URL, or any gateway) by Ray Data's HttpRequestProcessorConfig, so
  the structured-output label and the log-probs sep asks for reach vLLM unchanged.
* `--engine MODEL`: Ray Data runs vLLM engines itself on the cluster's GPUs (vLLMEngineProcessorConfig),
  with the body's sampling settings and its label regex as vLLM structured outputs. Its rows carry
  the generated text only, so the label's confidence is not stored (sep records None).

    pip install "ray[data,llm]"            # on the cluster, beside vLLM for --engine
    sep batch export jobs/sample.toml --out requests.jsonl --model qwen2.5-coder-1.5b
    python examples/ray_data_llm.py requests.jsonl results.jsonl --url http://vllm:8000/v1/chat/completions
    sep batch ingest jobs/sample.toml results.jsonl      # then export the next stage, until done

Run here with Ray 2.60 on 2 CPU cores (--url mode) against sep's scripted OpenAI-compatible test
server: a two-day job's four stages (summary, forecast, reflect, retry) took 8-10 s each, Ray's
start included, and ingested to done. The --engine mode needs GPUs and was not run here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def http_processor(url: str, concurrency: int, qps: int | None):
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    config = HttpRequestProcessorConfig(url=url, concurrency=concurrency, qps=qps, max_retries=3)
    return build_processor(
        config,
        preprocess=lambda row: {"payload": json.loads(row["body"])},  # the exported body, as it is
        postprocess=lambda row: {"custom_id": row["custom_id"], "response": json.dumps(row["http_response"])},
    )


def engine_processor(model: str, served_name: str, concurrency: int, max_model_len: int):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(model_source=model, concurrency=concurrency, batch_size=32,
                                       engine_kwargs={"max_model_len": max_model_len})

    def preprocess(row: dict) -> dict:
        body = json.loads(row["body"])
        sampling = {"temperature": body.get("temperature", 0.0), "seed": body.get("seed"),
                    "max_tokens": body.get("max_completion_tokens", body.get("max_tokens", 200)),
                    "repetition_penalty": body.get("repetition_penalty", 1.0)}
        if body.get("structured_outputs"):
            sampling["structured_outputs"] = body["structured_outputs"]
        return {"custom_id": row["custom_id"], "messages": body["messages"], "sampling_params": sampling}

    def postprocess(row: dict) -> dict:
        body = {"object": "chat.completion", "model": served_name, "choices": [
            {"index": 0, "finish_reason": "stop", "logprobs": None,
             "message": {"role": "assistant", "content": row["generated_text"]}}]}
        return {"custom_id": row["custom_id"], "response": json.dumps({"status_code": 200, "body": body})}

    return build_processor(config, preprocess=preprocess, postprocess=postprocess)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requests", type=Path, help="the file `sep batch export` wrote")
    parser.add_argument("results", type=Path, help="where to write the results for `sep batch ingest`")
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1/chat/completions",
                        help="an OpenAI-compatible chat completions URL (vllm serve replicas)")
    parser.add_argument("--engine", metavar="MODEL", help="run vLLM engines in Ray instead (a HF model id or folder)")
    parser.add_argument("--served-name", help="with --engine: the model name the export used (its --model)")
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP workers, or vLLM engine replicas")
    parser.add_argument("--qps", type=int, help="HTTP requests per second, at most")
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()

    import ray

    lines = [json.loads(line) for line in args.requests.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"custom_id": r["custom_id"], "body": json.dumps(r["body"], ensure_ascii=False)} for r in lines]
    ray.init(ignore_reinit_error=True)
    processor = engine_processor(args.engine, args.served_name or lines[0]["body"]["model"], args.concurrency,
                                 args.max_model_len) if args.engine else \
        http_processor(args.url, args.concurrency, args.qps)
    out = processor(ray.data.from_items(rows)).take_all()
    with args.results.open("w", encoding="utf-8") as f:
        for n, row in enumerate(out):
            response = json.loads(row["response"])
            if "status_code" not in response:  # the HTTP stage returns the server's JSON body itself
                response = {"status_code": 200, "body": response}
            f.write(json.dumps({"id": f"ray-{n}", "custom_id": row["custom_id"], "response": response,
                                "error": None}, ensure_ascii=False) + "\n")
    print(f"{len(out)} results written to {args.results}")


if __name__ == "__main__":
    main()
