"""The envoy xDS message classes, from descriptors shipped in the package, in a private pool.

grpcmesh does not depend on ``xds-protos`` at run time: that package installs its own old copy
of ``opentelemetry/proto`` and ``google/rpc`` over the real ones and breaks the OTLP exporter.
Instead the build (``scripts/gen_protos.py``) serializes the few envoy/xds/udpa files the
control plane needs, with all their imports, into ``xds_descriptors.binpb``. They are loaded
here into a *private* ``DescriptorPool``, so no name in the default pool is shadowed or
clashes with another package, and nothing outside grpcmesh sees them.

Messages from this pool mix only with messages from this pool: build ``Any``, ``Struct`` and
wrapper values with :func:`message` too (``message("google.protobuf.Any")``).
"""

from __future__ import annotations

import functools
from importlib import resources as importlib_resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from grpcmesh.errors import MeshError

DESCRIPTOR_FILE = "xds_descriptors.binpb"
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"
"""The one RPC a proxyless gRPC client calls on its control plane (state-of-the-world ADS)."""


class XdsDescriptorsMissingError(MeshError, ImportError):
    """The package lacks its xDS descriptor set (a checkout where the protos were not generated)."""


@functools.cache
def pool() -> descriptor_pool.DescriptorPool:
    """The private pool holding every xDS file the control plane uses (loaded on first use)."""
    try:
        data = importlib_resources.files("grpcmesh.xds").joinpath(DESCRIPTOR_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise XdsDescriptorsMissingError(
            f"grpcmesh/xds/{DESCRIPTOR_FILE} is missing: in a checkout run `make protos` "
            "(python scripts/gen_protos.py); an installed wheel always carries it"
        ) from exc
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    private = descriptor_pool.DescriptorPool()
    for file in files.file:  # written dependencies first, the order a pool needs
        private.Add(file)
    return private


@functools.cache
def message(full_name: str) -> Any:
    """The message class named ``full_name`` (e.g. ``envoy.config.cluster.v3.Cluster``)."""
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))


def enum_value(enum_name: str, value_name: str) -> int:
    """The number of ``value_name`` in the enum ``enum_name`` (e.g. an ``LbPolicy`` value)."""
    return int(pool().FindEnumTypeByName(enum_name).values_by_name[value_name].number)


def discovery_request() -> Any:
    return message("envoy.service.discovery.v3.DiscoveryRequest")


def discovery_response() -> Any:
    return message("envoy.service.discovery.v3.DiscoveryResponse")


def ads_stream(channel: grpc.aio.Channel) -> Any:
    """A client-side ``StreamAggregatedResources`` callable (for tests and tools)."""
    return channel.stream_stream(
        ADS_METHOD,
        request_serializer=lambda request: request.SerializeToString(),
        response_deserializer=discovery_response().FromString,
    )
