"""An xDS control plane fed by the registry: gRPC clients in any language dial ``xds:///NAME``.

``XdsServer`` / ``serve_xds`` run the ADS server; ``bootstrap_json`` writes the file a
client's ``GRPC_XDS_BOOTSTRAP`` points to. ``policy`` is the control plane's configuration
(per-service policies, client limits); ``resources`` builds the Listener, Route, Cluster and
ClusterLoadAssignment resources; ``protos`` holds their message classes (a private descriptor
pool); ``session`` is the per-stream protocol state machine; ``watches`` shares one registry
watch per service among all streams.
"""

from grpcmesh.xds.bootstrap import DEFAULT_NODE_ID, bootstrap, bootstrap_json
from grpcmesh.xds.policy import Limits, ServicePolicy, XdsPolicies
from grpcmesh.xds.server import AggregatedDiscoveryServicer, XdsServer, serve_xds
from grpcmesh.xds.session import AdsSession
from grpcmesh.xds.watches import RegistryWatches

__all__ = [
    "DEFAULT_NODE_ID",
    "AdsSession",
    "AggregatedDiscoveryServicer",
    "Limits",
    "RegistryWatches",
    "ServicePolicy",
    "XdsPolicies",
    "XdsServer",
    "bootstrap",
    "bootstrap_json",
    "serve_xds",
]
