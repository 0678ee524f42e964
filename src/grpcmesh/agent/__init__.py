"""Registration for services not written with grpcmesh (any language, plain grpcio).

``grpcmesh register NAME HOST:PORT`` runs a :class:`RegistrationAgent`: it registers the
target, mirrors its standard ``grpc.health.v1`` status into the registry, heartbeats and
deregisters when stopped.
"""

from grpcmesh.agent.registration import RegistrationAgent, agent_instance_id

__all__ = ["RegistrationAgent", "agent_instance_id"]
