"""Native TLS: the development certificate, start-up checks, and the HTTP-to-HTTPS redirect.

Sanic builds the server context from `{"cert": ..., "key": ...}` in every worker: TLS 1.2
and 1.3 only, ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), ALPN
`http/1.1`. This module makes sure the files it is given are usable before any worker
starts, so a bad certificate stops start-up with a message instead of failing handshakes.

`cryptography` is imported inside the functions that need it: workers import this module
(for `with_redirect_app`) but never load `cryptography` (app/__init__.py), and learn the
certificate's expiry for readiness from the main process (`NOT_AFTER_ENV`).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sanic import Sanic

from app.settings import Settings, SettingsError

CERT_FILE = "fullchain.pem"
KEY_FILE = "privkey.pem"
DEV_CERT_DAYS = 365
DEV_NAMES = ("localhost", "127.0.0.1", "::1")
# Set by `python -m app serve` after `check_files`, read by workers' readiness (app/ops/health.py).
NOT_AFTER_ENV = "ITEMS_TLS_NOT_AFTER"


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    names: tuple[str, ...]
    not_after: datetime

    def days_left(self, now: datetime | None = None) -> int:
        return (self.not_after - (now or datetime.now(UTC))).days


def generate_dev_cert(out_dir: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write a self-signed leaf certificate for localhost and its key (mode 0600)."""
    cert_path, key_path = out_dir / CERT_FILE, out_dir / KEY_FILE
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{' and '.join(existing)} exist; pass --force to replace them")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "items-service development"),
        ]
    )
    now = datetime.now(UTC)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=DEV_CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in DEV_NAMES[1:]]
            ),
            critical=False,
        )
        # A leaf, not a CA: it cannot sign other certificates even when a client trusts it.
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        # Strict verifiers (Python 3.13+, rust-based ones) insist on it, self-signed or not.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _write(path: Path, data: bytes, mode: int) -> None:
    # Written beside the target, then renamed: the file never exists with a wider mode or
    # half written, even when --force replaces one a running server reads.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def check_files(settings: Settings, now: datetime | None = None) -> CertificateInfo:
    """Refuse a certificate or key that is missing, unreadable, mismatched or out of date."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = settings.tls_cert, settings.tls_key
    cert_pem = _read("TLS_CERT", cert_path)
    key_pem = _read("TLS_KEY", key_path)
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise SettingsError(f"TLS_CERT: {cert_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise SettingsError(f"TLS_KEY: {key_path} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SettingsError(f"TLS_KEY: {key_path} holds no PEM private key") from None

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise SettingsError(f"TLS_KEY: {key_path} does not belong to the certificate {cert_path}")
    now = now or datetime.now(UTC)
    if cert.not_valid_after_utc <= now:
        raise SettingsError(
            f"TLS_CERT: {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.not_valid_before_utc > now:
        raise SettingsError(
            f"TLS_CERT: {cert_path} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise SettingsError(
            f"TLS_CERT: {cert_path} has no subjectAltName (clients and Sanic need one)"
        ) from None
    # Last, what the server will do with the files itself.
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise SettingsError(
            f"TLS_CERT: OpenSSL refuses {cert_path} with {key_path}: {exc}"
        ) from None
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        names=tuple(str(n) for n in names.get_values_for_type(x509.DNSName))
        + tuple(str(n) for n in names.get_values_for_type(x509.IPAddress)),
        not_after=cert.not_valid_after_utc,
    )


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def server_ssl(settings: Settings) -> dict[str, str] | None:
    """Sanic's `ssl=` argument: file names (each spawned worker loads them itself)."""
    if not settings.tls_enabled:
        return None
    return {"cert": str(settings.tls_cert), "key": str(settings.tls_key)}


def prepare_redirect(settings: Settings) -> None:
    """Listen on HTTP_REDIRECT_PORT too (call after the API app's `prepare`)."""
    if settings.tls_enabled and settings.HTTP_REDIRECT_PORT:
        Sanic.get_app(REDIRECT_APP).prepare(
            host=settings.HOST,
            port=settings.HTTP_REDIRECT_PORT,
            access_log=False,
            motd=False,
            auto_reload=False,
        )


REDIRECT_APP = "items-redirect"
