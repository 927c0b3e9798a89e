#!/usr/bin/env bash
# Scale-out on one machine: Redis, two `cobra serve --state-store` replicas and a YARP round-robin proxy, all on
# loopback. Ctrl-C stops everything. Settings (environment): MODEL_DIR (a hub-mirror folder; default: the tiny test
# model), DEVICE (cpu), REDIS_PORT (6379), PROXY_PORT (8000), REPLICA_PORTS ("8001 8002").
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model_dir="${MODEL_DIR:-$root/tests/fixtures/tiny-a/hub}"
device="${DEVICE:-cpu}"
redis_port="${REDIS_PORT:-6379}"
proxy_port="${PROXY_PORT:-8000}"
read -r -a replica_ports <<< "${REPLICA_PORTS:-8001 8002}"

dotnet build "$root/src/Cobra.Cli/Cobra.Cli.csproj" -c Release -v quiet -nologo
dotnet build "$root/samples/ScaleOut/ScaleOut.csproj" -c Release -v quiet -nologo
cobra="$root/src/Cobra.Cli/bin/Release/net10.0/cobra.dll"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# No persistence: snapshots are a cache, TTL'd by Cobra; cap memory and evict least-recently-used snapshots.
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --maxmemory 2gb --maxmemory-policy allkeys-lru &
pids+=($!)

replicas=()
for port in "${replica_ports[@]}"; do
  dotnet "$cobra" serve --model-dir "$model_dir" --device "$device" --urls "http://127.0.0.1:$port" \
    --state-store "redis://127.0.0.1:$redis_port" &
  pids+=($!)
  replicas+=("http://127.0.0.1:$port")
done

dotnet "$root/samples/ScaleOut/bin/Release/net10.0/ScaleOut.dll" --urls "http://127.0.0.1:$proxy_port" \
  --replicas "$(IFS=,; echo "${replicas[*]}")" &
pids+=($!)
echo "proxy: http://127.0.0.1:$proxy_port -> ${replicas[*]} (Redis on 127.0.0.1:$redis_port); Ctrl-C stops"
wait
