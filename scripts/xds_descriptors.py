"""Write the xDS descriptor set: the envoy/xds/udpa .proto descriptors the control plane needs.

Run by ``gen_protos.py`` in a child process whose ``sys.path`` holds ``xds-protos`` (a build
dependency, never a runtime one: that package ships its own copy of ``opentelemetry/proto``
that would overwrite opentelemetry-proto's files). The child imports the generated envoy
modules, walks each file's dependencies depth-first and writes every ``FileDescriptorProto``
once, dependencies before dependants, so ``grpcmesh.xds.protos`` can add them in order to a
private ``DescriptorPool`` at run time.

usage: xds_descriptors.py OUTPUT_FILE
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

MODULES = (
    "envoy.service.discovery.v3.ads_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.ring_hash_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
)
"""Generated modules whose files (and everything they import) the control plane builds or parses."""


def descriptor_set() -> Any:
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(out.file.add())

    for module in MODULES:
        add(importlib.import_module(module).DESCRIPTOR)
    return out


def main() -> None:
    data = descriptor_set().SerializeToString(deterministic=True)
    Path(sys.argv[1]).write_bytes(data)


if __name__ == "__main__":
    main()
