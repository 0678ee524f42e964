"""The bootstrap file gRPC clients read to find the control plane."""

from __future__ import annotations

import json

import pytest

from grpcmesh import ConfigError
from grpcmesh.xds import bootstrap_json


def test_bootstrap_names_the_server_with_insecure_creds_and_xds_v3() -> None:
    data = json.loads(bootstrap_json("127.0.0.1:18000", node_id="order-service-1"))
    (server,) = data["xds_servers"]
    assert server == {
        "server_uri": "127.0.0.1:18000",
        "channel_creds": [{"type": "insecure"}],
        "server_features": ["xds_v3"],
    }
    assert data["node"]["id"] == "order-service-1"
    assert data["node"]["cluster"]


@pytest.mark.parametrize("uri", ["", "127.0.0.1", "host:port", "host:0", ":18000"])
def test_bad_server_uri_is_rejected_naming_the_field(uri: str) -> None:
    with pytest.raises(ConfigError, match="server_uri"):
        bootstrap_json(uri)


def test_empty_node_id_is_rejected() -> None:
    with pytest.raises(ConfigError, match="node_id"):
        bootstrap_json("127.0.0.1:18000", node_id="")
