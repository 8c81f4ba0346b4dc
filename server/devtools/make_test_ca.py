"""Makes a local test certificate authority for demos and tests, never for production:

    python -m server.devtools.make_test_ca DIR [--client-cn NAME] [--days N]

writes into DIR (created if missing): ca.pem and ca-key.pem (the CA), server.pem and
server-key.pem (for localhost, 127.0.0.1 and ::1), client.pem and client-key.pem (a
client certificate with the given common name). Keys are written mode 0600. Needs the
``cryptography`` package (the dev extra), not the openssl command."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CAFiles:
    """The files one run wrote."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "authq test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little back-dating tolerates clock skew between the machines of a demo.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _leaf(
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_test_ca(directory: Path, client_cn: str = "authq-test-client", days: int = 365) -> CAFiles:
    """Writes a fresh CA, server and client certificate into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("authq local test CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_san: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_NAMES]
    server_san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    server_cert, server_key = _leaf(
        "localhost", ca_cert, ca_key, days, ExtendedKeyUsageOID.SERVER_AUTH, server_san
    )
    client_cert, client_key = _leaf(
        client_cn, ca_cert, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    result = CAFiles(
        ca=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    _write_cert(result.ca, ca_cert)
    _write_key(result.ca_key, ca_key)
    _write_cert(result.server_cert, server_cert)
    _write_key(result.server_key, server_key)
    _write_cert(result.client_cert, client_cert)
    _write_key(result.client_key, client_key)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.devtools.make_test_ca",
        description="Write a local test CA, a server certificate for localhost/127.0.0.1/::1 "
        "and a client certificate. For demos and tests only.",
    )
    parser.add_argument("directory", type=Path, help="where to write the PEM files")
    parser.add_argument(
        "--client-cn",
        default="authq-test-client",
        help="common name of the client certificate (default authq-test-client)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity (default 365)")
    args = parser.parse_args(argv)
    if args.days <= 0:
        parser.error("--days must be positive")
    try:
        made = make_test_ca(args.directory, args.client_cn, args.days)
    except OSError as exc:
        print(f"make_test_ca: {exc}", file=sys.stderr)
        return 1
    print(f"test CA written to {args.directory}:")
    for path in (made.ca, made.server_cert, made.server_key, made.client_cert, made.client_key):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
