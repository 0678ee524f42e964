"""Generate Python protobuf/gRPC code (and .pyi stubs for mypy) from every .proto we own.

Run by ``make`` after installing, and by the wheel build hook; generated files are never
committed. Each root is an import root whose code goes to an output directory on
``sys.path``: ``src/grpcmesh/protos/echo.proto`` becomes the module ``grpcmesh.protos.echo_pb2``
in ``src``; ``examples/shop/proto/shop/user/v1/user.proto`` becomes ``shop.user.v1.user_pb2``
in ``examples/shop`` (beside the example's hand-written ``shop`` package).

It also writes ``src/grpcmesh/xds/xds_descriptors.binpb``, the descriptors of the envoy xDS
messages the control plane uses (see ``scripts/xds_descriptors.py``), from ``xds-protos``
found in this interpreter (the wheel build environment) or else installed with pip into
``.tools/xds-protos`` (the development checkout), never into the environment grpcmesh runs in.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
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


XDS_DESCRIPTORS = Path("src/grpcmesh/xds/xds_descriptors.binpb")
XDS_PROTOS_REQUIREMENT = "xds-protos>=1.70"


def _xds_protos_path(project: Path) -> str | None:
    """A directory to put on ``PYTHONPATH`` for ``xds-protos``; None if this interpreter has it."""
    if importlib.util.find_spec("envoy") is not None:
        return None
    target = project / ".tools" / "xds-protos"
    if not (target / "envoy").is_dir():
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        subprocess.run([*command, XDS_PROTOS_REQUIREMENT], check=True)
    return str(target)


def generate_xds_descriptors(project: Path) -> Path:
    """Write the xDS descriptor set into the package; returns its path."""
    output = project / XDS_DESCRIPTORS
    env = dict(os.environ)
    extra = _xds_protos_path(project)
    if extra is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH", "")) if p)
    script = project / "scripts" / "xds_descriptors.py"
    subprocess.run([sys.executable, str(script), str(output)], check=True, env=env)
    return output


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    n = generate(root)
    print(f"generated code for {n} .proto file(s)")
    print(f"wrote {generate_xds_descriptors(root).relative_to(root)}")
