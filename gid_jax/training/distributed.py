"""Multi-process JAX: start ``jax.distributed`` when this run is one of several processes.

A multi-host run is one Python process per host (TPU pods, one SLURM task per node) or one per accelerator
(one SLURM task per GPU). Every process runs the same program: it reads its own 1/process_count of the
data (gid_jax.data.pipeline), hands its slice of each global batch to
``jax.make_array_from_process_local_data`` (gid_jax.sharding.global_batch), and calls the
checkpoint manager's save and restore like the others (orbax writes each process's shards and meets at
barriers); only process 0 writes metrics and shows a progress bar.

``maybe_initialize`` decides whether to call ``jax.distributed.initialize`` and with what, in this order:

1. ``mode='off'``: never (one process, whatever the environment says);
2. explicit arguments (``--coordinator-address``, ``--num-processes``, ``--process-id``,
   ``--local-device-ids``): initialise with them; JAX fills in what is missing from the cluster;
3. ``mode='on'``: initialise with no arguments, JAX detects everything (GCE TPU pods answer from the
   VM's metadata server, which is why tpu_pod.sh passes ``--distributed=on`` rather than relying on 4.);
4. ``mode='auto'``: initialise when the environment names several processes: ``JAX_COORDINATOR_ADDRESS``,
   a SLURM step with ``SLURM_NTASKS`` > 1, Open MPI's ``mpirun`` with ``OMPI_COMM_WORLD_SIZE`` > 1, or a
   GKE TPU slice with several ``TPU_WORKER_HOSTNAMES``. A single SLURM task is left alone on purpose: JAX's
   SLURM detection would restrict it to the GPU numbered ``SLURM_LOCALID`` (one device per process).

It must run before anything asks JAX for devices: the backend is created once, with the devices it sees.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Sequence

import jax

log = logging.getLogger('gid_jax.train')

MODES = ('auto', 'on', 'off')


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
  """Where this process sits in the run (after any initialisation)."""
  process_index: int
  process_count: int
  local_device_count: int
  device_count: int
  initialized: bool  # jax.distributed was started (by this call or an earlier one)


def cluster_env(environ=None) -> str | None:
  """The multi-process environment this process was started in ('slurm', 'openmpi', ...), or None."""
  env = os.environ if environ is None else environ

  def count(name):
    try:
      return int(env.get(name, '1'))
    except ValueError:
      return 1

  if env.get('JAX_COORDINATOR_ADDRESS'):
    return 'jax'
  # The variables JAX's own SlurmCluster needs; SLURM_STEP_NODELIST exists only inside srun, so an sbatch
  # script body (one process that launches the others) is not mistaken for one of them.
  slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')
  if all(v in env for v in slurm) and count('SLURM_NTASKS') > 1:
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in env and count('OMPI_COMM_WORLD_SIZE') > 1:
    return 'openmpi'
  if len([h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return 'tpu'
  return None


def parse_device_ids(ids: str | Sequence[int | str] | None) -> list[int] | None:
  """'0,1,2' or ['0', '1'] (absl list flags) -> [0, 1, 2]; None or empty -> None."""
  if ids is None:
    return None
  if isinstance(ids, str):
    ids = [s for s in ids.split(',') if s.strip()]
  try:
    out = [int(i) for i in ids]
  except ValueError as e:
    raise ValueError(f'--local-device-ids must be comma-separated integers, got {ids!r}') from e
  return out or None


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None,
                     local_device_ids: str | Sequence[int | str] | None = None, *, mode: str = 'auto',
                     initialization_timeout: int = 300) -> ProcessInfo:
  """Start jax.distributed if this is a multi-process run (see the module docstring); idempotent.

  Args:
    coordinator_address: 'host:port' of process 0's coordinator service (the same in every process).
    num_processes: how many processes take part.
    process_id: this process's index in [0, num_processes).
    local_device_ids: the local accelerators this process uses ('0,1' or a list); None = all it sees.
    mode: 'auto', 'on' or 'off' (see the module docstring).
    initialization_timeout: seconds to wait for every process to reach the coordinator; a process that
      never comes fails the others after this long instead of hanging.

  Returns:
    The process layout, read from JAX after initialisation.

  Raises:
    ValueError: for an unknown mode, explicit arguments with mode='off', or arguments JAX rejects
      (e.g. a process_id outside [0, num_processes)).
  """

  if mode not in MODES:
    raise ValueError(f'distributed mode must be one of {MODES}, got {mode!r}')
  device_ids = parse_device_ids(local_device_ids)
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id, device_ids))
  if mode == 'off' and explicit:
    raise ValueError('--distributed=off contradicts --coordinator-address/--num-processes/--process-id/'
                     '--local-device-ids')
  # One process given explicitly is a plain run: no coordinator service to start or wait for.
  single = num_processes == 1 and coordinator_address is None
  if jax.distributed.is_initialized():
    reason = None  # started earlier (e.g. by a notebook or a test harness): nothing to do
  elif mode == 'off' or single:
    reason = None
  elif explicit:
    reason = 'flags'
  elif mode == 'on':
    reason = 'forced'
  else:
    reason = cluster_env()
  if reason is not None:
    log.info('starting jax.distributed (%s): coordinator=%s num_processes=%s process_id=%s devices=%s',
             reason, coordinator_address or 'auto', num_processes or 'auto',
             'auto' if process_id is None else process_id, device_ids or 'all')
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=device_ids,
                               initialization_timeout=initialization_timeout)
  info = ProcessInfo(jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
                     jax.distributed.is_initialized())
  if info.process_count > 1:
    log.info('process %d of %d: %d local devices, %d in all', info.process_index, info.process_count,
             info.local_device_count, info.device_count)
  return info
