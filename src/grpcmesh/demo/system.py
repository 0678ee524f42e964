"""The example system the demo runs: where the shop lives and how each of its processes starts."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from grpcmesh.errors import ConfigError

SERVICES = ("user-service", "order-service", "payment-service", "notification-service")
"""The shop's services, in the order they are started."""

SHOP_ENV = "GRPCMESH_DEMO_SHOP"


def default_shop_dir() -> Path:
    """Where the shop example is: ``$GRPCMESH_DEMO_SHOP``, else the source checkout's
    ``examples/shop`` (``make demo``), else the copy the wheel ships in ``grpcmesh/demo/shop``."""
    configured = os.environ.get(SHOP_ENV)
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[3] / "examples" / "shop"
    if (checkout / "shop" / "app.py").is_file():
        return checkout
    return Path(__file__).resolve().parent / "shop"


def check_shop_dir(shop_dir: Path) -> Path:
    """``shop_dir`` if it holds the shop with its generated code, else a clear error."""
    if not (shop_dir / "shop" / "app.py").is_file():
        raise ConfigError(
            f"the shop example is not at {shop_dir}; reinstall grpcmesh (`pip install 'grpcmesh[all]'`), "
            f"run the demo from a source checkout (`make demo`) or point ${SHOP_ENV} at examples/shop"
        )
    if not (shop_dir / "shop" / "user" / "v1" / "user_pb2.py").is_file():
        raise ConfigError(f"the shop's protobuf code is not generated in {shop_dir}; run `make protos` first")
    return shop_dir


@dataclass(frozen=True)
class DemoSystem:
    """Everything needed to start the shop's processes against one registry and data directory."""

    shop_dir: Path
    workdir: Path
    auth_key: str
    ttl: str = "3s"

    @property
    def registry_url(self) -> str:
        return f"sqlite://{(self.workdir / 'registry.db').resolve()}"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def env(self, *, serving: bool = True) -> dict[str, str]:
        """A child's environment: the shop importable, the config keys the demo needs overridden.

        ``serving`` children (the services) also get free ports for gRPC and metrics; the
        traffic generator's config has no ``service`` section and must not grow one.
        """
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(p for p in (str(self.shop_dir), env.get("PYTHONPATH", "")) if p),
            PYTHONUNBUFFERED="1",
            GRPCMESH_REGISTRY=self.registry_url,
            GRPCMESH_REGISTRY_DEREGISTER_AFTER=self.ttl,
            SERVICE_AUTH_KEY=self.auth_key,
            SHOP_DATA_DIR=str(self.workdir / "data"),
        )
        if serving:
            env.update(GRPCMESH_SERVICE_PORT="0", GRPCMESH_METRICS_PROMETHEUS_PORT="0")
        return env

    @staticmethod
    def service_argv(name: str) -> list[str]:
        return [sys.executable, "-m", "shop", "serve", name]

    def traffic_argv(self, rate: float) -> list[str]:
        config = self.shop_dir / "config" / "shop-client.yaml"
        return [sys.executable, "-m", "shop", "traffic", "--rate", f"{rate:g}", "--config", str(config)]


def auth_key_from_env() -> str:
    """``$SERVICE_AUTH_KEY`` if set (so other tools can call the demo's services), else a fresh random key."""
    return os.environ.get("SERVICE_AUTH_KEY") or secrets.token_urlsafe(24)
