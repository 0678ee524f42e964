"""The xDS messages come from grpcmesh's own descriptor set, in a private pool, not from xds-protos."""

from __future__ import annotations

import subprocess
import sys

from google.protobuf import descriptor_pool

from grpcmesh.xds import protos
from tests.helpers import python_env


def test_messages_live_in_a_private_pool_only() -> None:
    cluster = protos.message("envoy.config.cluster.v3.Cluster")
    assert cluster.DESCRIPTOR.file.pool is protos.pool()
    assert protos.pool() is not descriptor_pool.Default()
    try:
        descriptor_pool.Default().FindMessageTypeByName("envoy.config.cluster.v3.Cluster")
    except KeyError:
        pass
    else:
        raise AssertionError("envoy messages leaked into the default descriptor pool")


def test_serving_xds_imports_no_generated_envoy_or_opentelemetry_proto_modules() -> None:
    code = (
        "import sys, grpcmesh.xds\n"
        "from grpcmesh.xds import protos, resources\n"
        "from grpcmesh.xds.policy import ServicePolicy\n"
        "resources.cluster('s', ServicePolicy())\n"
        "tops = ('envoy', 'xds', 'udpa', 'validate')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in tops or m.startswith('opentelemetry.proto'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
