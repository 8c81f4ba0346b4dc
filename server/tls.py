"""TLS on the gRPC port, and the rule that keeps plaintext on loopback.

With a certificate and key configured the port speaks TLS (and, with a client CA,
requires client certificates that CA signed). Without them the server listens only
on a loopback address unless plaintext is allowed explicitly (``--allow-plaintext``):
tokens and customer images must not cross a network in the clear by accident."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from server.settings import Settings, SettingsError

PLAINTEXT_FLAGS = "--tls-cert/--tls-key (or --allow-plaintext)"


class PlaintextRefused(SettingsError):
    """A plaintext listen address that is not loopback, without allow_plaintext."""


def listen_host(listen: str) -> str:
    """The host part of a gRPC listen address: ``[::1]:50051`` -> ``::1``,
    ``0.0.0.0:0`` -> ``0.0.0.0``; an address without a port is all host."""
    if listen.startswith("["):
        host, sep, _ = listen[1:].partition("]")
        return host if sep else listen
    host, sep, port = listen.rpartition(":")
    if not sep or ":" in host or not port.isdigit():
        # No port, or a bare IPv6 address such as ::1 (its colons are not a port).
        return listen
    return host


def is_loopback(listen: str) -> bool:
    """Whether a listen address only accepts connections from this machine: its host
    is in 127.0.0.0/8, is ::1, or is ``localhost``. Wildcards (0.0.0.0, [::]), other
    names and other schemes (unix:, vsock:) are not."""
    host = listen_host(listen.strip()).lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_enabled(settings: Settings) -> bool:
    return settings.tls_cert is not None and settings.tls_key is not None


def check_listen(settings: Settings, listen: str | None = None) -> None:
    """Refuses a plaintext listen address off loopback (one line, naming the address
    and the flags), unless ``allow_plaintext``."""
    address = settings.listen if listen is None else listen
    if tls_enabled(settings) or settings.allow_plaintext or is_loopback(address):
        return
    raise PlaintextRefused(
        f"refusing to listen in plaintext on {address} (not loopback): "
        f"configure TLS with {PLAINTEXT_FLAGS}"
    )


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise SettingsError(f"{what} {path}: not a PEM file")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """``grpc.ServerCredentials`` for the configured certificate, or None when TLS is
    off. Raises SettingsError naming the file when one cannot be read."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = _read_pem(settings.tls_cert, "tls_cert")
    key = _read_pem(settings.tls_key, "tls_key")
    client_ca = (
        _read_pem(settings.tls_client_ca, "tls_client_ca")
        if settings.tls_client_ca is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None and settings.require_client_cert,
    )
