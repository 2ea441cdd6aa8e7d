#!/usr/bin/env bash
# Start N training processes on this machine, as a multi-host run would, for testing and debugging.
#
#   launch/local.sh N [train flags...]
#   launch/local.sh 2 --config=configs/ldm.py:size=tiny --config.data_dir=DATA \
#       --config.vae_workdir=RUN_VAE --workdir=RUN_LDM
#
# Run it where you would run python -m gid_jax.train (relative --config and --workdir paths stay yours).
# Each process runs on the CPU with DEVICES_PER_PROCESS fake devices (default 4), so the mesh has
# N x DEVICES_PER_PROCESS devices (config.mesh; the default data=-1 puts them all on the data axis).
# Process 0 hosts the coordinator on 127.0.0.1:PORT (default: a free port). Process 0 prints to this
# terminal; process i writes LOG_DIR/process_i.log (default: ./local_logs). If one process fails, the
# others are stopped (they would wait for it in a collective) and its exit code is returned.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [python -m gid_jax.train flags...]" >&2
  exit 2
fi
N=$1
shift
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-4}
LOG_DIR=${LOG_DIR:-local_logs}
PYTHON=${PYTHON:-python}
# Bound and released again before the coordinator binds it: a small race, acceptable on one machine.
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$LOG_DIR"

# XLA_FLAGS is read when each process creates its CPU backend; JAX_PLATFORMS keeps an installed GPU or
# TPU plugin out of the way so that every process has the same kind and number of devices.
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < N; i++)); do
  args=(-m gid_jax.train --coordinator-address="127.0.0.1:${PORT}" --num-processes="$N" --process-id="$i" "$@")
  if ((i == 0)); then
    "$PYTHON" "${args[@]}" &
  else
    "$PYTHON" "${args[@]}" >"${LOG_DIR}/process_${i}.log" 2>&1 &
  fi
  pids+=($!)
done
echo "local.sh: ${N} processes x ${DEVICES_PER_PROCESS} CPU devices, coordinator 127.0.0.1:${PORT}," \
     "logs of processes 1.. in ${LOG_DIR}/" >&2

status=0
for ((left = N; left > 0; left--)); do
  # wait -n returns as soon as any process ends, so a failure stops the others at once.
  wait -n && continue
  rc=$?
  if [[ $status == 0 ]]; then
    status=$rc
    stop_all
  fi
done
exit "$status"
