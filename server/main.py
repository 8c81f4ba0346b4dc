"""authq-server: the command line entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError

from server.app import serve
from server.embedded_redis import EmbeddedRedisError
from server.metrics import check_metrics_listen
from server.policy.model import PolicyError
from server.settings import Settings, SettingsError
from server.store.redis_pipe import shown_url
from server.store.redis_requirements import RedisUnfit
from server.tls import check_listen, server_credentials


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="authq-server",
        description="The authq centralized authorization queue server (gRPC + Redis).",
        epilog="Environment: AUTHQ_LISTEN, AUTHQ_REDIS_URL, AUTHQ_DATA_DIR, AUTHQ_LEASE_MS, "
        "AUTHQ_LOG_LEVEL, AUTHQ_TLS_SERVER_CERT, AUTHQ_TLS_SERVER_KEY, AUTHQ_TLS_CLIENT_CA, "
        "AUTHQ_TLS_REQUIRE_CLIENT_CERT, AUTHQ_METRICS_LISTEN. Flags win over the environment, "
        "which wins over --config. Without TLS the server listens only on loopback unless "
        "--allow-plaintext.",
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
    parser.add_argument(
        "--policy", type=Path, help="business policy TOML (default: the built-in one)"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on this address, e.g. 127.0.0.1:9464 (default: off)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="seed demo branches and accounts (printed at start) for trying it out",
    )
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); enables TLS")
    tls.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        help="CA (PEM) that signs client certificates; needs --require-client-cert",
    )
    tls.add_argument(
        "--require-client-cert",
        action="store_true",
        default=None,
        help="refuse clients without a certificate signed by --tls-client-ca",
    )
    tls.add_argument(
        "--allow-plaintext",
        action="store_true",
        default=None,
        help="allow listening without TLS on a non-loopback address (trusted networks only)",
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
                "policy_file": args.policy,
                "log_level": args.log_level,
                "demo": args.demo,
                "tls_cert": args.tls_cert,
                "tls_key": args.tls_key,
                "tls_client_ca": args.tls_client_ca,
                "require_client_cert": args.require_client_cert,
                "allow_plaintext": args.allow_plaintext,
                "metrics_listen": args.metrics_listen,
            },
        )
        # Before anything starts (Redis included): plaintext off loopback, bad certificates.
        check_listen(settings)
        server_credentials(settings)
        check_metrics_listen(settings)
    except SettingsError as exc:
        print(f"authq-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        uvloop.run(serve(settings))
    except PolicyError as exc:
        # Checked before anything starts (server/app.py): nothing to clean up.
        print(f"authq-server: the business policy is refused: {exc}", file=sys.stderr)
        return 2
    except EmbeddedRedisError as exc:
        print(f"authq-server: embedded Redis failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"authq-server: {exc}", file=sys.stderr)
        return 1
    except RedisUnfit as exc:
        print(f"authq-server: {exc}", file=sys.stderr)
        return 2
    except RedisConnectionError as exc:
        # Unreachable past the retries, or refused (TLS): a setting or Redis to fix.
        where = shown_url(settings.redis_url) if settings.redis_url else "the embedded Redis"
        print(f"authq-server: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
