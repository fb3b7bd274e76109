"""Multi-host runs: `initialize(config.distributed)` joins this process to the others.

Every process runs the same command (the same config and workdir on a shared filesystem);
each builds the same global batch plan and feeds only its own rows (`sharding.put_batch`),
selection passes split their examples over the processes (`selection.per_example`), and
only process 0 writes results, metrics, exports and artefact files (orbax writes
checkpoints from every process). The coordinator address, process count and id come from
`config.distributed`, else from `$FISHJAX_COORDINATOR_ADDRESS`, `$FISHJAX_NUM_PROCESSES`,
`$FISHJAX_PROCESS_ID`, else from JAX's own cluster detection (TPU pods, SLURM, Open MPI,
Kubernetes). On CPU the collectives run over gloo.
"""

from __future__ import annotations

import logging
import os
import socket

import jax
import ml_collections

from fishjax.core.errors import ConfigError

log = logging.getLogger("fishjax")
ENV = {"coordinator_address": "FISHJAX_COORDINATOR_ADDRESS",
       "num_processes": "FISHJAX_NUM_PROCESSES", "process_id": "FISHJAX_PROCESS_ID"}


def settings(d: ml_collections.ConfigDict) -> dict[str, str | int | None]:
    """The coordinator address, process count and id: config fields, else environment
    variables, else None (JAX's auto-detection)."""
    out: dict[str, str | int | None] = {}
    for field, var in ENV.items():
        value = d.get(field)
        if value is None and os.environ.get(var):
            value = os.environ[var]
            if field != "coordinator_address":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"${var}={value!r} is not an integer") from None
        out[field] = value
    n, pid = out["num_processes"], out["process_id"]
    if n is not None and (n < 1 or (pid is not None and not 0 <= pid < n)):
        raise ConfigError(f"config.distributed: process_id={pid} with num_processes={n} "
                          "(ids run from 0 to num_processes - 1)")
    return out


def initialize(d: ml_collections.ConfigDict) -> None:
    """Joins the processes of a multi-host run (no-op unless `d.enabled`, and once per
    process: later runs in the same process, e.g. a grid's cells, reuse it); logs which
    process and host this is."""
    if not d.enabled or jax.distributed.is_initialized():
        return
    s = settings(d)
    # CPU processes need a collectives backend for cross-process arrays (GPU and TPU
    # bring their own; the CPU setting is harmless there). A user's choice wins.
    if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=s["coordinator_address"], num_processes=s["num_processes"],
            process_id=s["process_id"], initialization_timeout=int(d.initialization_timeout),
            heartbeat_timeout_seconds=int(d.heartbeat_timeout))
    except RuntimeError as e:  # e.g. JAX already ran a computation in this process
        raise ConfigError(f"config.distributed.enabled: joining the other processes failed "
                          f"({e}); it must happen before anything touches a device (in a "
                          "notebook: run train_and_evaluate first, or restart the kernel)"
                          ) from None
    _tag_fishjax_records()
    log.info("host %s: %d local devices, %d in all", socket.gethostname(),
             jax.local_device_count(), jax.device_count())


def _tag_fishjax_records() -> None:
    """Prefixes every fishjax log line (its child loggers' too) with `[process i/n] `."""
    make = logging.getLogRecordFactory()
    if getattr(make, "_fishjax_tag", False):
        return

    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        if record.name == "fishjax" or record.name.startswith("fishjax."):
            record.msg = f"{process_tag()}{record.msg}"
        return record

    factory._fishjax_tag = True
    logging.setLogRecordFactory(factory)


def process_tag() -> str:
    """`[process i/n] ` in a multi-process run, else empty: the prefix of log lines."""
    if jax.process_count() == 1:
        return ""
    return f"[process {jax.process_index()}/{jax.process_count()}] "
