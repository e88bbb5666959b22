"""Generate Python code from the .proto files in sensilla/protos/ (run at bootstrap).

The files import each other as "sensilla/protos/<name>.proto", so the generated
modules import each other as ``sensilla.protos.<name>_pb2``. Regenerates only when a
.proto is newer than its generated module.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "sensilla" / "protos"


def stale(proto: Path) -> bool:
    out = proto.with_name(proto.stem + "_pb2.py")
    return not out.exists() or out.stat().st_mtime < proto.stat().st_mtime


def main() -> int:
    import grpc_tools
    from grpc_tools import protoc  # imported late: only needed when regenerating

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not any(stale(p) for p in protos) and "--force" not in sys.argv:
        return 0
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *[str(p.relative_to(ROOT)) for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        print("gen_protos: protoc failed", file=sys.stderr)
        return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
