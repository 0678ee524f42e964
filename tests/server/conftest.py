"""Fixtures for server tests: a private in-process registry and a mesh around it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from grpcmesh import Mesh, Registry, open_registry


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    async with open_registry(f"memory://{uuid.uuid4().hex}") as reg:
        yield reg


@pytest.fixture
async def mesh(registry: Registry) -> AsyncIterator[Mesh]:
    async with Mesh(registry) as m:
        yield m
