"""``grpcmesh demo``: the shop example system on the embedded registry, with a live terminal view.

A supervisor starts two processes per shop service and a traffic generator, watches the
registry and every instance's metrics endpoint, SIGKILLs one instance now and then and
starts a replacement (the chaos step), and on the way out stops everything gracefully and
prints a summary.
"""

from grpcmesh.demo.runner import DemoOptions, run_demo
from grpcmesh.demo.summary import ChaosEvent, DemoSummary

__all__ = ["ChaosEvent", "DemoOptions", "DemoSummary", "run_demo"]
