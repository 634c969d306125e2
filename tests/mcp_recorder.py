"""A stdio MCP proxy that records what reaches the server behind it, for tests.

    python mcp_recorder.py RECORD_FILE -- COMMAND [ARG...]

Starts COMMAND, copies its stdin and stdout through unchanged, and appends one JSON line per
client-to-server message (``{"method", "params"}``) to RECORD_FILE, so a test can prove a
request never reached the upstream.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import IO


def _forward_requests(child: IO[bytes], record: IO[str]) -> None:
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
            entry = {"method": message.get("method"), "params": message.get("params")}
        except (ValueError, AttributeError):
            entry = {"unparsed": line.decode("utf-8", "replace")}
        record.write(json.dumps(entry) + "\n")
        record.flush()
        child.write(line)
        child.flush()
    child.close()


def main() -> int:
    record_path, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        print(__doc__, file=sys.stderr)
        return 2
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    with open(record_path, "a", encoding="utf-8") as record:
        threading.Thread(target=_forward_requests, args=(child.stdin, record),
                         daemon=True).start()
        for line in iter(child.stdout.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
