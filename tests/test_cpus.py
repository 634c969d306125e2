"""The default worker and engine-thread counts follow the CPUs a container may use, not the
node's: cgroup v2 ``cpu.max``, v1 CFS quota, and the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_authz.cpus import available_cpus, cgroup_cpu_quota

requirement = pytest.mark.requirement
AFFINITY = len(os.sched_getaffinity(0))


def cgroup(tmp_path: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@requirement("container-cpus")
@pytest.mark.parametrize(("files", "quota"), [
    ({"cpu.max": "200000 100000\n"}, 2.0),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),
])
def test_the_cgroup_quota_is_read_from_v2_or_v1(tmp_path: Path, files: dict[str, str],
                                                quota: float | None) -> None:
    assert cgroup_cpu_quota(cgroup(tmp_path, files)) == quota


@requirement("container-cpus")
def test_a_quota_caps_the_cpus_rounded_down_and_never_below_one(tmp_path: Path) -> None:
    assert available_cpus(cgroup(tmp_path / "none", {})) == AFFINITY
    assert available_cpus(cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert available_cpus(cgroup(tmp_path / "one-and-a-half",
                                 {"cpu.max": "150000 100000"})) == 1
    assert available_cpus(cgroup(tmp_path / "many", {"cpu.max": "6400000 100000"})) == AFFINITY
