"""What each worker of a supervised group is serving, shared through small files.

Every worker writes ``worker-<index>.json`` in the group's run directory (atomically: a temporary
file, then a rename) whenever its policy store changes and when it starts shutting down. Any
process of the group reads the whole board: the supervisor for ``/readyz``, each worker for
``GetPolicyStatus`` (which then says which revision every worker is on). Files of processes that
are gone are ignored, so a crashed worker never looks like it is serving.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .activation import PolicyStatus


@dataclass(frozen=True)
class WorkerPolicy:
    index: int
    pid: int
    active_revision: str
    activated_at_ns: int
    serving: bool


class WorkerBoard:
    """The status files of one worker group; ``index`` is this process's slot (None: read-only,
    the supervisor)."""

    def __init__(self, directory: str, index: int | None = None):
        self.directory = Path(directory)
        self.index = index

    def publish(self, status: PolicyStatus, serving: bool) -> None:
        """Record this worker's revision and whether it serves (it must have an index)."""
        assert self.index is not None, "only a worker publishes"
        entry = WorkerPolicy(self.index, os.getpid(), status.active_revision,
                             status.activated_at_ns, serving)
        target = self.directory / f"worker-{self.index}.json"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(entry)), encoding="utf-8")
        os.replace(tmp, target)

    def read(self) -> list[WorkerPolicy]:
        """Every live worker's last published status, by index."""
        found = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                entry = WorkerPolicy(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue  # being replaced, or not ours
            if _alive(entry.pid):
                found.append(entry)
        return sorted(found, key=lambda e: e.index)

    def retire(self, index: int) -> None:
        """Forget a worker slot whose process ended (the supervisor calls this)."""
        (self.directory / f"worker-{index}.json").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
