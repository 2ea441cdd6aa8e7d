#!/usr/bin/env bash
# Run training on every host of a Cloud TPU VM slice (v4-64, v5e-64, ...), one process per host.
#
#   TPU_NAME=gid-v4-64 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/ldm.py:size=paper --config.data_dir=/mnt/gid/data \
#       --config.vae_workdir=/mnt/gid/runs/vae --workdir=/mnt/gid/runs/ldm
#
# Environment:
#   TPU_NAME, ZONE   the slice (required); PROJECT optional (else gcloud's default project)
#   REPO_DIR         where the repository is on every host (default: ~/gid_jax)
#   SYNC=1           first copy this checkout to REPO_DIR on every host and `pip install -e .[tpu]` there
#   DETACH=1         run under nohup (output in REPO_DIR/train.log on each host) so that closing this
#                    terminal does not stop training; follow it with `... ssh --worker=0 --command="tail -f ..."`
#   EXTRA_ENV        extra variables for every host, e.g. "LIBTPU_INIT_ARGS=--xla_tpu_... TPU_STDERR_LOG_LEVEL=0"
#
# --distributed=on makes every process call jax.distributed.initialize(), which reads the slice's layout
# (workers, this host's index, the coordinator = worker 0) from the TPU VM metadata server. The mesh spans
# all chips of the slice: config.mesh data=-1 by default; e.g. --config.mesh.fsdp=8 for a model that does
# not fit one chip. --workdir must be the same for every host: a gs:// URL (the cloud extra) or a shared mount;
# checkpoints are written by all hosts together, metrics by host 0. --config.data_dir must be a local path on
# every host (a copy on its disk or a gcsfuse mount). SIGTERM (maintenance, preemption) saves and exits 0:
# rerun the same command to resume.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM slice name}"
: "${ZONE:?set ZONE to the slice zone}"
REPO_DIR=${REPO_DIR:-'~/gid_jax'}
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && where+=(--project="$PROJECT")

if [[ "${SYNC:-0}" == 1 ]]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="mkdir -p ${REPO_DIR}"
  # Source only: data and runs stay on the shared mount.
  (cd "$root" && git ls-files -z | tar --null -czf /tmp/gid_jax_src.tgz -T -)
  "${gcloud_tpu[@]}" scp /tmp/gid_jax_src.tgz "$TPU_NAME":/tmp/gid_jax_src.tgz "${where[@]}" --worker=all
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all \
      --command="cd ${REPO_DIR} && tar -xzf /tmp/gid_jax_src.tgz && python3 -m pip install -q -e '.[tpu]'"
fi

train="python3 -m gid_jax.train --distributed=on $(printf '%q ' "$@")"
if [[ "${DETACH:-0}" == 1 ]]; then
  train="nohup ${train} > train.log 2>&1 < /dev/null &"
fi
# --worker=all runs the command on every host at once (they must all start: initialize waits for them).
"${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all \
    --command="cd ${REPO_DIR} && ${EXTRA_ENV:+export ${EXTRA_ENV} && }${train}"
