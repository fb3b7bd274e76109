"""What a benchmark ran on: recorded with every figure (speed ratios differ by CPU)."""

from __future__ import annotations

import os
import platform
import time

import jax


def cpu_model() -> str:
    """The CPU's model name (e.g. 'Intel(R) Xeon(R) Processor'), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def machine() -> dict:
    """Backend, device, CPU model and count, platform and date."""
    return {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not `getrusage`'s ru_maxrss: Linux
    keeps that across fork and exec, so a child started by a large parent reports the
    parent's peak."""
    return _status_mib("VmHWM")


def rss_mib() -> float:
    """This process's resident memory now (VmRSS)."""
    return _status_mib("VmRSS")
