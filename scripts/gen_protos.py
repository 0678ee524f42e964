"""Generate Python protobuf/gRPC code (and .pyi stubs for mypy) from every .proto we own.

Run by ``make`` after installing, and by the wheel build hook; generated files are never
committed. Each root is an import root whose code goes to an output directory on
``sys.path``: ``src/grpcmesh/protos/echo.proto`` becomes the module ``grpcmesh.protos.echo_pb2``
in ``src``; ``examples/shop/proto/shop/user/v1/user.proto`` becomes ``shop.user.v1.user_pb2``
in ``examples/shop`` (beside the example's hand-written ``shop`` package).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOTS: list[tuple[Path, Path]] = [
    (Path("src"), Path("src")),
    (Path("examples/shop/proto"), Path("examples/shop")),
]
"""(import root of the .proto files, directory the generated modules go to)."""


def _plugin(name: str) -> str | None:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else shutil.which(name)


def generate(project: Path) -> int:
    import grpc_tools
    from grpc_tools import protoc

    well_known = str(Path(grpc_tools.__file__).parent / "_proto")
    count = 0
    for root, out_dir in ROOTS:
        base, out = project / root, project / out_dir
        protos = sorted(p for p in base.rglob("*.proto") if ".venv" not in p.parts) if base.is_dir() else []
        if not protos:
            continue
        args = ["protoc", f"-I{base}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
        mypy_plugin, mypy_grpc_plugin = _plugin("protoc-gen-mypy"), _plugin("protoc-gen-mypy_grpc")
        if mypy_plugin and mypy_grpc_plugin:
            args += [
                f"--plugin=protoc-gen-mypy={mypy_plugin}",
                f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
                f"--mypy_out={out}",
                f"--mypy_grpc_out={out}",
            ]
        args += [str(p) for p in protos]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {base}")
        count += len(protos)
    return count


if __name__ == "__main__":
    n = generate(Path(__file__).resolve().parent.parent)
    print(f"generated code for {n} .proto file(s)")
