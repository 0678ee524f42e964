"""How a whole ``ServiceInstance`` travels through a Consul service's ``Meta`` map.

Consul limits ``Meta`` (``agent/structs`` ``validateMetaPair``): at most 64 pairs, keys of at
most 128 characters drawn from ``[A-Za-z0-9_-]`` and not starting with ``consul-``, values of
at most 512 characters. A grpcmesh instance (metadata, endpoints, dependencies, weight,
health) easily outgrows one value, so it is stored as:

* ``endpoints`` and ``dependencies``: comma-joined, exactly as the original Go design writes them, so tools
  that only know the original Go design's layout keep working (left out when longer than one value allows);
* ``grpcmesh-owner``: a random token of the registry object that registered it, so a second
  live owner of the same id is noticed (and an old owner never deregisters its successor);
* ``grpcmesh-chunks``: how many chunks follow, and ``grpcmesh-0`` … ``grpcmesh-N``: the
  instance's wire JSON (:func:`grpcmesh.model.encode_instance`, pure ASCII) cut into
  512-character pieces. Readers concatenate the chunks and decode them like any other
  backend's record, so the encoding is versioned and forward compatible.

That leaves room for 60 chunks, about 30 KB of JSON per instance; anything larger is refused
at registration with an error naming ``metadata``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpcmesh.errors import InvalidInstanceError, InvalidRecordError
from grpcmesh.model import ServiceInstance, decode_instance, encode_instance

META_MAX_PAIRS = 64
META_KEY_MAX_LENGTH = 128
META_VALUE_MAX_LENGTH = 512

CHUNK_COUNT_KEY = "grpcmesh-chunks"
OWNER_KEY = "grpcmesh-owner"
CHUNK_KEY_PREFIX = "grpcmesh-"
SEED_KEYS = ("endpoints", "dependencies")

MAX_CHUNKS = META_MAX_PAIRS - 2 - len(SEED_KEYS)
MAX_RECORD_BYTES = MAX_CHUNKS * META_VALUE_MAX_LENGTH


def chunk_key(index: int) -> str:
    return f"{CHUNK_KEY_PREFIX}{index}"


def encode_meta(instance: ServiceInstance, owner: str | None = None) -> dict[str, str]:
    """The ``Meta`` map for ``instance``; raises :class:`InvalidInstanceError` if it cannot fit."""
    record = encode_instance(instance).decode("ascii")  # json.dumps escapes non-ASCII: one char = one byte
    if len(record) > MAX_RECORD_BYTES:
        raise InvalidInstanceError(
            "metadata",
            f"the instance encodes to {len(record)} bytes but Consul's service Meta holds at most "
            f"{MAX_RECORD_BYTES} ({MAX_CHUNKS} values of {META_VALUE_MAX_LENGTH} characters); "
            "shrink metadata, endpoints or dependencies",
        )
    meta: dict[str, str] = {}
    for key, values in (("endpoints", instance.endpoints), ("dependencies", instance.dependencies)):
        joined = ",".join(values)
        if len(joined) <= META_VALUE_MAX_LENGTH:
            meta[key] = joined
    chunks = [record[i : i + META_VALUE_MAX_LENGTH] for i in range(0, len(record), META_VALUE_MAX_LENGTH)]
    if owner is not None:
        meta[OWNER_KEY] = owner
    meta[CHUNK_COUNT_KEY] = str(len(chunks))
    for index, chunk in enumerate(chunks):
        meta[chunk_key(index)] = chunk
    return meta


def owner_of(meta: Any) -> str | None:
    """The owner token in a service's ``Meta``, if any."""
    owner = meta.get(OWNER_KEY) if isinstance(meta, Mapping) else None
    return owner if isinstance(owner, str) else None


def has_grpcmesh_record(meta: Mapping[str, Any]) -> bool:
    return CHUNK_COUNT_KEY in meta


def decode_meta(meta: Mapping[str, Any]) -> ServiceInstance:
    """Reassemble and decode the chunks; raises :class:`InvalidRecordError` when they are damaged."""
    raw_count = meta.get(CHUNK_COUNT_KEY)
    most = META_MAX_PAIRS - 1  # what any writer could have stored, not only this version
    if (
        not isinstance(raw_count, str)
        or not raw_count.isascii()
        or not raw_count.isdigit()
        or not 1 <= int(raw_count) <= most
    ):
        shown = str(raw_count)[:20]
        raise InvalidRecordError(f"Meta {CHUNK_COUNT_KEY}={shown!r} is not a chunk count from 1 to {most}")
    parts = []
    for index in range(int(raw_count)):
        part = meta.get(chunk_key(index))
        if not isinstance(part, str):
            raise InvalidRecordError(f"Meta {chunk_key(index)} is missing (record has {raw_count} chunks)")
        parts.append(part)
    return decode_instance("".join(parts))
