"""QUIC/TLS settings for HTTP/3: load a certificate and key, or make a self-signed ECDSA pair."""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from prism.http.quic import H3_ALPN, QuicConfiguration


def self_signed_certificate(
    hostnames: tuple[str, ...] = ("localhost",),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh P-256 key and a one-year certificate for `hostnames` plus 127.0.0.1 and ::1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prism reflector")])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


RECEIVE_WINDOW = 524_288_000
"""reflector.go's max stream and connection receive window (500 MiB)."""


DEFAULT_DATAGRAM_SIZE = 1200
"""QUIC's smallest guaranteed datagram size: safe on any path. Python's per-packet cost makes
throughput roughly proportional to it, so links known to carry more (loopback, jumbo-frame
LANs) can raise it with `--http3-max-datagram-size`."""


SERVER_RECEIVE_WINDOW = 1024 * 1024
"""What a client may send the server on one connection before it is read: requests have no body,
so the server's window bounds per-connection memory (reflector.md's 500 MiB is the client's)."""


def quic_configuration(
    is_client: bool,
    cert_file: str | None = None,
    key_file: str | None = None,
    max_datagram_size: int = DEFAULT_DATAGRAM_SIZE,
) -> QuicConfiguration:
    window = RECEIVE_WINDOW if is_client else SERVER_RECEIVE_WINDOW
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(H3_ALPN),
        max_datagram_frame_size=65536,
        idle_timeout=20.0,
        max_data=window,
        max_stream_data=window,
    )
    config.max_datagram_size = max_datagram_size
    if not is_client:
        if cert_file and key_file:
            config.load_cert_chain(cert_file, key_file)
        elif cert_file or key_file:
            raise ValueError("--http3-cert and --http3-key must be given together")
        else:
            load_self_signed(config)
    return config


def load_self_signed(config: QuicConfiguration) -> None:
    """A fresh self-signed pair, loaded through PEM files (the one way both QUIC libraries read)."""
    cert, key = self_signed_certificate()
    with tempfile.TemporaryDirectory(prefix="prism-h3-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        config.load_cert_chain(cert_path, key_path)
