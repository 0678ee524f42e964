"""``python -m shop serve NAME`` runs one service; ``python -m shop traffic`` generates load.

Run from the repository root with ``examples/shop`` on ``PYTHONPATH`` (``grpcmesh demo`` does
this for you), and ``SERVICE_AUTH_KEY`` set (the configs require it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from shop.app import CONFIG_DIR, SERVICES


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m shop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve one shop service until SIGTERM/SIGINT")
    serve.add_argument("name", choices=sorted(SERVICES))
    serve.add_argument("--config", type=Path, help="YAML config (default: examples/shop/config/NAME.yaml)")
    traffic = commands.add_parser("traffic", help="create users and orders at a bounded rate, print stats as JSON")
    traffic.add_argument("--config", type=Path, default=CONFIG_DIR / "shop-client.yaml")
    traffic.add_argument("--rate", type=float, default=8.0, help="operations per second (default 8)")
    traffic.add_argument("--concurrency", type=int, default=8, help="most operations in flight (default 8)")
    traffic.add_argument("--report-every", type=float, default=0.5, help="seconds between stats lines")
    traffic.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        from shop.app import serve as serve_service

        asyncio.run(serve_service(args.name, args.config))
    else:
        if args.rate <= 0 or args.concurrency < 1:
            parser.error("--rate must be positive and --concurrency at least 1")
        from shop.traffic import run

        asyncio.run(run(args.config, args.rate, args.concurrency, args.report_every, args.seed))


if __name__ == "__main__":
    main()
