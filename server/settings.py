"""Server settings: one frozen dataclass, built once at start-up from (in rising
precedence) defaults, the TOML config file, AUTHQ_* environment variables and command
line flags, then passed explicitly. Nothing here reads the environment at import."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a bad value; the message names the key and where it came from."""


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    # None: start a private redis-server under data_dir (the embedded default).
    redis_url: str | None = None
    data_dir: Path = Path("var")
    # Key prefix; the braces make every key one Redis Cluster hash slot.
    key_prefix: str = "{authq}"
    # An authorizer's claim lasts this long unless renewed.
    lease_ms: int = 60_000
    # Aging (R7): head start of an item per importance level above 1 and for urgency.
    importance_step_ms: int = 300_000
    urgency_step_ms: int = 60_000
    # A requested move up the queue (R6) lapses unless a second person confirms it
    # within this window.
    move_confirm_window_ms: int = 600_000
    max_image_bytes: int = 8 * 1024 * 1024
    max_images: int = 12
    # Processes that fully decode uploads and make their renditions, off the request
    # path (server/images/checker.py): about 10-25 ms of CPU per typical capture.
    image_check_workers: int = 2
    # The event stream that fans changes out to every server process is capped here.
    events_maxlen: int = 50_000
    redis_pool_size: int = 64
    shutdown_grace_s: float = 5.0
    # The admission ceiling (server/api/admission.py): past it a new call or stream is
    # answered RESOURCE_EXHAUSTED at once. Far above the bench's 256 calls in flight and
    # a center's hundreds of authorizers and thousands of tellers; at ~40 ms of a core
    # per scrypt check, 64 logins in flight already queue for a second or more.
    max_calls_in_flight: int = 2000
    max_open_streams: int = 20_000
    max_logins_in_flight: int = 64
    # After this many wrong passwords in a row for a user id (known or not), its Login and
    # ChangePassword are refused for login_lock_s, before the scrypt check, unless an
    # administrator resets the password or enables the account (R11).
    login_failures_before_lock: int = 5
    login_lock_s: int = 900
    token_ttl_s: int = 8 * 3600
    password_max_age_days: int = 90
    # The business policy (TOML); None: server/policy/default_policy.toml.
    policy_file: Path | None = None
    # Seed demo branches and accounts at start (make run).
    demo: bool = False
    log_level: str = "INFO"
    # TLS on the gRPC port (server/tls.py): with a certificate and key the port speaks
    # TLS; with tls_client_ca too, clients must present a certificate that CA signed.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    require_client_cert: bool = False
    # Without certificates the server listens only on loopback unless this is set.
    allow_plaintext: bool = False
    # A Redis without appendonly yes, appendfsync always and (with a memory limit)
    # noeviction loses requests it acknowledged: refused at start unless this is set
    # (server/store/redis_requirements.py).
    accept_volatile_redis: bool = False
    # The Prometheus endpoint (server/metrics/) as HOST:PORT, e.g. 127.0.0.1:9464;
    # None: off. Plain HTTP, so off loopback only with allow_plaintext.
    metrics_listen: str | None = None
    # How often the queue gauges of the endpoint are refreshed from Redis.
    metrics_interval_s: float = 5.0
    # How often the event loop's lag is probed (server/metrics/loop_lag.py). Each
    # probe wakes an idle server (about 0.2 ms of CPU per wake-up on a small VM);
    # under load the loop is awake anyway and a probe costs next to nothing.
    metrics_loop_lag_tick_s: float = 0.05
    # The automatic backlog emergency (R8, server/backlog.py): declared when the oldest
    # waiting item or the estimated wait of a new one reaches its declare threshold;
    # ended once both stay under their clear thresholds for backlog_clear_hold_s.
    # A declare threshold of 0 turns that measure off.
    backlog_declare_oldest_s: float = 1800.0
    backlog_clear_oldest_s: float = 600.0
    backlog_declare_estimated_s: float = 2400.0
    backlog_clear_estimated_s: float = 900.0
    backlog_clear_hold_s: float = 120.0
    backlog_check_s: float = 5.0
    # The permanent archive (server/archive/): None: <data_dir>/archive. Hot Redis keys
    # of an archived request are removed archive_keep_hot_s after it was archived.
    archive_dir: Path | None = None
    # Archive in a child process at a lower CPU priority (server/archive/worker.py);
    # False: on the server's own event loop (tests that drive the archiver).
    archive_worker: bool = True
    archive_keep_hot_s: float = 7 * 86400.0
    # How often each process retries unarchived requests and removes due hot keys.
    archive_sweep_s: float = 60.0
    # While the event stream runs at archive_defer_events_per_s or more (about three
    # events per request), archiving waits, for at most archive_defer_max_s; then it
    # runs as before (server/archive/deferral.py). 0: archiving never waits.
    archive_defer_events_per_s: float = 1000.0
    archive_defer_max_s: float = 900.0
    # Blob GC: an image no live request references, untouched for blob_gc_grace_s
    # (uploaded but never submitted, or its request archived), leaves the hot store.
    blob_gc_grace_s: float = 86400.0
    blob_gc_interval_s: float = 3600.0

    @classmethod
    def load(
        cls,
        *,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_from_toml(config_file))
        if env is not None:
            values.update(_from_env(env))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls()._with(values, source="settings")

    def _with(self, values: Mapping[str, Any], source: str) -> Settings:
        known = {f.name: f for f in fields(self)}
        converted: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                raise SettingsError(f"{source}: unknown setting {key!r}")
            default = getattr(self, key)
            try:
                converted[key] = _convert(raw, default, key)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{source}: {key}: {exc}") from None
        result = replace(self, **converted)
        result._validate()
        return result

    def _validate(self) -> None:
        for key in (
            "lease_ms",
            "move_confirm_window_ms",
            "max_image_bytes",
            "max_images",
            "image_check_workers",
            "events_maxlen",
            "metrics_interval_s",
            "metrics_loop_lag_tick_s",
            "archive_sweep_s",
            "blob_gc_grace_s",
            "blob_gc_interval_s",
            "backlog_check_s",
            "max_calls_in_flight",
            "max_open_streams",
            "max_logins_in_flight",
            "login_failures_before_lock",
            "login_lock_s",
        ):
            if getattr(self, key) <= 0:
                raise SettingsError(f"{key}: must be positive, got {getattr(self, key)}")
        for key in ("archive_keep_hot_s", "archive_defer_events_per_s", "archive_defer_max_s"):
            if getattr(self, key) < 0:
                raise SettingsError(f"{key}: must be 0 or more, got {getattr(self, key)}")
        for measure in ("oldest", "estimated"):
            declare, clear = f"backlog_declare_{measure}_s", f"backlog_clear_{measure}_s"
            if getattr(self, declare) > 0 and getattr(self, clear) >= getattr(self, declare):
                raise SettingsError(f"{clear}: must be below {declare} (hysteresis)")
        if self.importance_step_ms <= 2 * self.urgency_step_ms:
            # Importance must outrank urgency within the aging window (R7 order).
            raise SettingsError(
                "importance_step_ms: must exceed twice urgency_step_ms "
                f"({self.importance_step_ms} <= 2 * {self.urgency_step_ms})"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise SettingsError("tls_client_ca: needs tls_cert and tls_key (TLS is off)")
        if self.require_client_cert and self.tls_client_ca is None:
            raise SettingsError("require_client_cert: needs tls_client_ca to verify them")
        if self.tls_client_ca is not None and not self.require_client_cert:
            # grpcio either requires and verifies client certificates or never asks
            # for them: a CA that would silently check nothing is refused instead.
            raise SettingsError(
                "tls_client_ca: grpcio cannot verify optional client certificates; "
                "set require_client_cert too, or drop tls_client_ca"
            )


def _convert(raw: Any, default: Any, key: str) -> Any:
    if key in ("redis_url", "metrics_listen"):
        return str(raw) if raw else None
    if key in PATH_OR_NONE:
        return Path(raw) if raw else None
    if isinstance(default, Path):
        return Path(raw)
    if isinstance(default, bool):
        return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return str(raw)


PATH_OR_NONE = frozenset({"tls_cert", "tls_key", "tls_client_ca", "policy_file", "archive_dir"})

# No AUTHQ_TLS_CERT/KEY here: the command line clients read those for their own
# client certificate; a server started in the same shell must not pick them up.
ENV_KEYS = {
    "AUTHQ_LISTEN": "listen",
    "AUTHQ_REDIS_URL": "redis_url",
    "AUTHQ_DATA_DIR": "data_dir",
    "AUTHQ_LEASE_MS": "lease_ms",
    "AUTHQ_LOG_LEVEL": "log_level",
    "AUTHQ_POLICY": "policy_file",
    "AUTHQ_TLS_SERVER_CERT": "tls_cert",
    "AUTHQ_TLS_SERVER_KEY": "tls_key",
    "AUTHQ_TLS_CLIENT_CA": "tls_client_ca",
    "AUTHQ_TLS_REQUIRE_CLIENT_CERT": "require_client_cert",
    "AUTHQ_METRICS_LISTEN": "metrics_listen",
}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {key: env[name] for name, key in ENV_KEYS.items() if env.get(name)}


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    server = document.get("server", {})
    if not isinstance(server, dict):
        raise SettingsError(f"config file {path}: [server] must be a table")
    return dict(server)
