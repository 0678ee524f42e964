"""The shop: the seed's four example services (user, order, payment, notification) on grpcmesh.

Generated protobuf code lives beside this code (``shop.user.v1.user_pb2`` ...); run from the
repository root with ``examples/shop`` on ``sys.path``.
"""
