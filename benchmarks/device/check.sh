#!/usr/bin/env bash
# The GPU check of the served nets and the worker, on a lent device machine (an H100 with
# the workplace's 'cuda' image: Python 3.12, torch with CUDA, no internet, no Redis).
#
#   bash benchmarks/device/bundle.sh        # here, once: fills .whl/ and .redis/ (ignored)
#   device run: bash benchmarks/device/check.sh, carry [".whl", ".redis"], timeout_s 560
#
# The Python packages the image lacks travel as wheels in .whl/, redis-server and its
# libraries in .redis/. It runs gpu_check.py (CPU vs GPU vs a Redis-fed worker) and
# inference.py --device cuda; logs go to $OUT. About 2 minutes on an H100, start excluded.
# Overrides (for a dry run elsewhere): PY, WHLDIR, SITE, REDIS_PORT, DEVICE, OUT,
# T_GPU, T_INF, INF_ARGS, FORCE.
set -u -o pipefail

cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
PY=${PY:-python3}
WHLDIR=${WHLDIR:-.whl}
SITE=${SITE:-/tmp/site}
REDIS_PORT=${REDIS_PORT:-6379}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/beamsteer-device-out}
T_GPU=${T_GPU:-150}
T_INF=${T_INF:-300}
INF_ARGS=${INF_ARGS:---concurrency 32,64 --repeat 1}
mkdir -p "$OUT"
URL="redis://127.0.0.1:${REDIS_PORT}/0"
export BEAMSTEER_REDIS_URL="$URL"
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $* ($(date -u +%H:%M:%S) UTC)"; }

step "1. install wheels into $SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHLDIR"/*.whl
rc=$?; echo "[rc] pip install: $rc"
[ $rc -eq 0 ] || exit 10
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
echo "PYTHONPATH=$PYTHONPATH"

step "2. imports"
"$PY" - <<'EOF'
import importlib, sys, traceback
print("python", sys.version.split()[0], sys.executable)
failed = []
for name in ["typing_extensions", "pydantic", "pydantic_core", "redis", "redis.asyncio",
             "websockets", "numpy", "torch", "server.worker", "server.worker_cli",
             "server.queue.redis_streams", "server.logs", "models.registry",
             "benchmarks.inference", "clients.cli.main"]:
    try:
        m = importlib.import_module(name)
        v = getattr(m, "__version__", getattr(m, "VERSION", ""))
        print(f"  ok   {name:28s} {v} {getattr(m, '__file__', '')}")
    except BaseException:
        failed.append(name)
        print(f"  FAIL {name}")
        traceback.print_exc()
import torch
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
from clients.cli.main import build_parser
sub = [a for a in build_parser()._actions if a.dest == "command"][0]
print("beamsteer subcommands:", sorted(sub.choices))
if "worker" not in sub.choices:
    failed.append("beamsteer worker subcommand")
if failed:
    print("IMPORT FAILURES:", ", ".join(failed))
    sys.exit(1)
EOF
rc=$?; echo "[rc] imports: $rc"
[ $rc -eq 0 ] || exit 11

step "3. redis-server on 127.0.0.1:$REDIS_PORT"
chmod +x "$ROOT/.redis/bin/redis-server" 2>/dev/null
LD_LIBRARY_PATH="$ROOT/.redis/lib" "$ROOT/.redis/bin/redis-server" --bind 127.0.0.1 \
    --port "$REDIS_PORT" --save '' --appendonly no --daemonize no \
    --logfile "$OUT/redis.log" &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null' EXIT
"$PY" - "$URL" <<'EOF'
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
for _ in range(100):
    try:
        print("PING ->", r.ping(), "| redis", r.info("server")["redis_version"])
        sys.exit(0)
    except redis.exceptions.ConnectionError:
        time.sleep(0.1)
print("redis-server did not answer")
sys.exit(1)
EOF
rc=$?; echo "[rc] redis: $rc"
if [ $rc -ne 0 ]; then cat "$OUT/redis.log"; exit 12; fi

step "4. GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "[rc] nvidia-smi: $?"

step "5. smoke: one burst worker on $DEVICE (stderr shown; benchmarks hide theirs)"
# the benchmarks start workers with stdout/stderr to /dev/null and wait up to 180 s for
# them, longer than gpu_check's timeout: a worker that cannot start shows itself here.
timeout 60 "$PY" -m clients.cli worker --redis-url "$URL" --prefix beamsteer-smoke \
    --models superres,tagger --device "$DEVICE" --burst > "$OUT/smoke_worker.log" 2>&1
rc=$?; tail -n 20 "$OUT/smoke_worker.log"; echo "[rc] smoke worker: $rc"
if [ $rc -ne 0 ] && [ -z "${FORCE:-}" ]; then
    echo "worker failed: skipping the benchmarks (FORCE=1 runs them anyway)"; exit 13
fi

step "6. gpu_check.py --device $DEVICE (timeout ${T_GPU}s)"
timeout "$T_GPU" "$PY" benchmarks/gpu_check.py --device "$DEVICE" --redis-url "$URL" 2>&1 \
    | tee "$OUT/gpu_check.log"
rc_gpu=$?; echo "[rc] gpu_check: $rc_gpu"

step "7. inference.py --device $DEVICE $INF_ARGS (timeout ${T_INF}s)"
# shellcheck disable=SC2086
timeout "$T_INF" "$PY" benchmarks/inference.py --device "$DEVICE" $INF_ARGS \
    --redis-url "$URL" 2>&1 | tee "$OUT/inference.log"
rc_inf=$?; echo "[rc] inference: $rc_inf"

step "done"
echo "[rc] summary: gpu_check=$rc_gpu inference=$rc_inf (124 = timed out)"
[ "$rc_gpu" -eq 0 ] && [ "$rc_inf" -eq 0 ]
