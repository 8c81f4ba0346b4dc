"""authq-server: the command line entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvloop

from server.app import serve
from server.embedded_redis import EmbeddedRedisError
from server.settings import Settings, SettingsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="authq-server",
        description="The authq centralized authorization queue server (gRPC + Redis).",
        epilog="Environment: AUTHQ_LISTEN, AUTHQ_REDIS_URL, AUTHQ_DATA_DIR, AUTHQ_LEASE_MS, "
        "AUTHQ_LOG_LEVEL. Flags win over the environment, which wins over --config.",
    )
    parser.add_argument("--listen", help="host:port to serve gRPC on (default 127.0.0.1:50051)")
    parser.add_argument(
        "--redis-url",
        help="external Redis, e.g. redis://host:6379/0; without it a private "
        "redis-server runs under the data directory",
    )
    parser.add_argument("--data-dir", type=Path, help="images, embedded Redis (default ./var)")
    parser.add_argument("--config", type=Path, help="TOML file with a [server] table")
    parser.add_argument("--lease-ms", type=int, help="claim lease in ms (default 60000)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="seed demo branches and accounts (printed at start) for trying it out",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.load(
            config_file=args.config,
            env=os.environ,
            overrides={
                "listen": args.listen,
                "redis_url": args.redis_url,
                "data_dir": args.data_dir,
                "lease_ms": args.lease_ms,
                "log_level": args.log_level,
                "demo": args.demo,
            },
        )
    except SettingsError as exc:
        print(f"authq-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        uvloop.run(serve(settings))
    except EmbeddedRedisError as exc:
        print(f"authq-server: embedded Redis failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"authq-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
