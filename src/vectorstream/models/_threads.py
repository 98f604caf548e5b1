"""How many cores this process may use (affinity and cgroup quota), for inference thread pools."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_cores() -> int | None:
    # A container may be limited by a CPU quota while affinity still shows every host core;
    # sizing a thread pool to the host would then oversubscribe the quota and slow everything.
    try:
        if _CGROUP_V2.is_file():
            quota, _, period = _CGROUP_V2.read_text().strip().partition(" ")
            if quota != "max" and period:
                return max(1, math.ceil(int(quota) / int(period)))
        elif _CGROUP_V1_QUOTA.is_file() and _CGROUP_V1_PERIOD.is_file():
            quota_us = int(_CGROUP_V1_QUOTA.read_text().strip())
            period_us = int(_CGROUP_V1_PERIOD.read_text().strip())
            if quota_us > 0 and period_us > 0:
                return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        return None
    return None


def available_cores() -> int:
    """The number of cores this process may run on: affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cores()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


__all__ = ["available_cores"]
