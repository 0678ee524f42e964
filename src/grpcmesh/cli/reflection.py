"""Calling any method of a server that offers reflection, without its ``.proto`` files (like grpcurl).

The server describes itself through ``grpc.reflection.v1alpha.ServerReflection``: we ask it
for the file that defines the wanted service (and, transitively, the files that file
imports), build the descriptors in a private pool, make message classes from them, and
turn JSON into the request with ``google.protobuf.json_format``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpcmesh.errors import MeshError

INFRASTRUCTURE = ("grpc.health.", "grpc.reflection.")
"""Services every mesh server offers; left out when a method name is looked up without its service."""


class ReflectionError(MeshError):
    """The server could not describe the wanted method (unknown, ambiguous, or no reflection)."""


@dataclass(frozen=True)
class ResolvedMethod:
    """A method and message classes for its request and reply."""

    descriptor: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def path(self) -> str:
        """The HTTP/2 path of the method, ``/package.Service/Method``."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    def request_from_json(self, text: str) -> Message:
        """The request message parsed from JSON (proto field names or their lowerCamelCase JSON names)."""
        try:
            return json_format.Parse(text or "{}", self.request_class())
        except json_format.ParseError as exc:
            raise ReflectionError(f"request JSON for {self.request_class.DESCRIPTOR.full_name}: {exc}") from exc


def split_method(spec: str) -> tuple[str | None, str]:
    """`(service or None, method)` from `Method`, `Service/Method`, `pkg.Service/Method` or `pkg.Service.Method`."""
    spec = spec.strip().lstrip("/")
    if "/" in spec:
        service, _, method = spec.rpartition("/")
        return service, method
    if "." in spec:
        service, _, method = spec.rpartition(".")
        return service, method
    return None, spec


class ReflectionClient:
    """Resolves methods through a channel's server reflection."""

    def __init__(self, channel: grpc.aio.Channel, *, metadata: tuple[tuple[str, str], ...] = (), timeout: float = 5.0):
        self._stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self._metadata = metadata
        self._timeout = timeout
        self._pool = descriptor_pool.DescriptorPool()
        self._files: set[str] = set()

    async def _ask(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        call = self._stub.ServerReflectionInfo(iter([request]), timeout=self._timeout, metadata=self._metadata)
        async for response in call:
            if response.HasField("error_response"):
                raise ReflectionError(
                    f"server reflection: {response.error_response.error_message} "
                    f"(code {response.error_response.error_code})"
                )
            return response
        raise ReflectionError("server reflection ended without answering")

    async def services(self) -> list[str]:
        """Every service the server offers."""
        response = await self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return sorted(s.name for s in response.list_services_response.service)

    async def _load_symbol(self, symbol: str) -> None:
        response = await self._ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        await self._add_files(response.file_descriptor_response.file_descriptor_proto)

    async def _add_files(self, serialized: Any) -> None:
        protos = {}
        for blob in serialized:
            proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
            protos[proto.name] = proto
        for name in list(protos):
            await self._add_file(name, protos)

    async def _add_file(self, name: str, known: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        if name in self._files:
            return
        if name not in known:
            response = await self._ask(reflection_pb2.ServerReflectionRequest(file_by_filename=name))
            for blob in response.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
                known.setdefault(proto.name, proto)
            if name not in known:
                raise ReflectionError(f"server reflection does not know the file {name!r}")
        proto = known[name]
        for dependency in proto.dependency:
            await self._add_file(dependency, known)
        self._pool.Add(proto)
        self._files.add(name)

    async def resolve(self, spec: str) -> ResolvedMethod:
        """The method ``spec`` names; the service part may be left out when only one service has the method."""
        service_name, method_name = split_method(spec)
        offered = await self.services()
        if service_name is None:
            candidates = [s for s in offered if not s.startswith(INFRASTRUCTURE)]
        else:
            candidates = [s for s in offered if s == service_name or s.rpartition(".")[2] == service_name]
            if not candidates:
                raise ReflectionError(f"the server has no service {service_name!r}; it offers {', '.join(offered)}")
        matches: list[MethodDescriptor] = []
        for name in candidates:
            await self._load_symbol(name)
            method = self._pool.FindServiceByName(name).methods_by_name.get(method_name)
            if method is not None:
                matches.append(method)
        if not matches:
            available = [f"{name}/{m.name}" for name in candidates for m in self._pool.FindServiceByName(name).methods]
            raise ReflectionError(f"no method {spec!r}; available: {', '.join(available) or 'none'}")
        if len(matches) > 1:
            raise ReflectionError(
                f"{method_name!r} is ambiguous: "
                + ", ".join(f"{m.containing_service.full_name}/{m.name}" for m in matches)
                + "; name the service too"
            )
        method = matches[0]
        return ResolvedMethod(
            method,
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def invoke(
    channel: grpc.aio.Channel,
    method: ResolvedMethod,
    request: Message,
    *,
    timeout: float | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> AsyncIterator[Message]:
    """Call ``method``: one reply for unary methods, every reply for server-streaming ones."""
    descriptor = method.descriptor
    if descriptor.client_streaming:
        raise ReflectionError(f"{method.path} takes a stream of requests; `call` sends one request")
    deserialize: Callable[[bytes], Message] = method.response_class.FromString
    if descriptor.server_streaming:
        stream = channel.unary_stream(method.path, request_serializer=_serialize, response_deserializer=deserialize)
        async for reply in stream(request, timeout=timeout, metadata=metadata):
            yield reply
        return
    unary = channel.unary_unary(method.path, request_serializer=_serialize, response_deserializer=deserialize)
    yield await unary(request, timeout=timeout, metadata=metadata)
