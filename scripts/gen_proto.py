"""Generate the Python gRPC stubs from proto/ into service/mcp_authz/_pb/.

protoc writes absolute imports named after the proto package (``from mcp.authz.v1 import
authz_pb2``), which would collide with the ``mcp`` SDK package. The generated modules live under
``mcp_authz._pb`` instead, so the imports between generated files are rewritten to that prefix.
Run by ``make proto``; the output is never edited by hand and never committed.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "service" / "mcp_authz" / "_pb"
PACKAGE = "mcp_authz._pb"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={OUT_DIR}",
            f"--pyi_out={OUT_DIR}", f"--grpc_python_out={OUT_DIR}", *protos]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    local_roots = {p.split("/")[0] for p in protos}
    roots = "|".join(map(re.escape, local_roots))
    pattern = re.compile(rf"^from ((?:{roots})(?:\.\w+)*) import", re.MULTILINE)
    for path in OUT_DIR.rglob("*.py*"):
        text = path.read_text()
        path.write_text(pattern.sub(rf"from {PACKAGE}.\1 import", text))
    for directory in [OUT_DIR, *[d for d in OUT_DIR.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
