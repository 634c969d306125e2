"""How many CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota.

``os.cpu_count()`` counts the machine. In a container limited to 2 CPUs on a 64-core node it
says 64, and "one worker per core" would start 64 processes of ~100 MiB each, which a 2-CPU
pod neither runs faster nor has the memory for. So the default worker and engine-thread counts
come from here: the CPUs the scheduler lets the process run on (``taskset``, cpusets), at most
the quota (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded
down and at least 1, as Go's automaxprocs does. A fractional quota is rounded down because a
worker beyond it would only be throttled.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"


def available_cpus(cgroup_root: str = CGROUP_ROOT) -> int:
    """The CPUs this process can keep busy (at least 1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, int(quota))
    return max(count, 1)


def cgroup_cpu_quota(cgroup_root: str = CGROUP_ROOT) -> float | None:
    """The cgroup's CPU quota in CPUs, or None when there is none (or it cannot be read)."""
    root = Path(cgroup_root)
    try:
        fields = (root / "cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
    except OSError:
        fields = []
    if len(fields) == 2:
        return None if fields[0] == "max" else _ratio(fields[0], fields[1])
    try:  # v1
        return _ratio((root / "cpu" / "cpu.cfs_quota_us").read_text(),
                      (root / "cpu" / "cpu.cfs_period_us").read_text())
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 says -1 for no quota
