"""Native TLS on a real 2-worker server, with the certificate `python -m app gen-cert` makes."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import ROOT, free_port, running_server, server_env


@dataclass
class TLSServer:
    base: str
    port: int
    redirect_port: int
    ca: Path


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(tmp_path_factory.mktemp("certs"))
    result = subprocess.run(
        [sys.executable, "-m", "app", "gen-cert", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def tls_server(
    database_url: str, cert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSServer]:
    redirect_port = free_port()
    log_path = Path(tmp_path_factory.mktemp("tls")) / "server.log"
    with running_server(
        database_url,
        log_path=log_path,
        tls_ca=cert_dir / "fullchain.pem",
        WORKERS="2",
        TLS_CERT=str(cert_dir / "fullchain.pem"),
        TLS_KEY=str(cert_dir / "privkey.pem"),
        HTTP_REDIRECT_PORT=str(redirect_port),
        HSTS_MAX_AGE="600",
    ) as base:
        yield TLSServer(
            base, int(base.rsplit(":", 1)[1]), redirect_port, cert_dir / "fullchain.pem"
        )


def test_gen_cert_writes_a_private_key_and_a_localhost_leaf(cert_dir: Path) -> None:
    assert (cert_dir / "privkey.pem").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((cert_dir / "fullchain.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_gen_cert_refuses_to_overwrite_without_force(cert_dir: Path) -> None:
    before = (cert_dir / "privkey.pem").read_bytes()
    command = [sys.executable, "-m", "app", "gen-cert", "--out", str(cert_dir)]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert (cert_dir / "privkey.pem").read_bytes() == before


def test_gen_cert_force_replaces_the_files(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "app", "gen-cert", "--out", str(tmp_path)]
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
    before = (tmp_path / "privkey.pem").read_bytes()
    forced = subprocess.run([*command, "--force"], cwd=ROOT, capture_output=True, timeout=60)
    assert forced.returncode == 0
    assert (tmp_path / "privkey.pem").read_bytes() != before
    assert (tmp_path / "privkey.pem").stat().st_mode & 0o777 == 0o600


def test_a_verified_https_request_gets_hsts(tls_server: TLSServer) -> None:
    resp = httpx.get(
        f"{tls_server.base}/health", verify=ssl.create_default_context(cafile=str(tls_server.ca))
    )
    assert resp.status_code == 200
    assert resp.headers["strict-transport-security"] == "max-age=600"
    assert resp.extensions["http_version"] == b"HTTP/1.1"


def _handshake(port: int, ca: Path, version: ssl.TLSVersion) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    if version < ssl.TLSVersion.TLSv1_2:
        # Let this client offer the old protocol, so a refusal comes from the server.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


# Python deprecates naming TLS 1.0 / 1.1 at all; these tests must, to offer them.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_before_1_2_is_refused_by_the_server(tls_server: TLSServer, version: str) -> None:
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(tls_server.port, tls_server.ca, getattr(ssl.TLSVersion, version))
    # The server hangs up on the ClientHello (asyncio sends no alert before closing); a
    # client unable to offer the old protocol would fail with NO_PROTOCOLS_AVAILABLE instead.
    error = refused.value
    assert isinstance(error, ssl.SSLEOFError) or "PROTOCOL_VERSION" in str(error), error


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls_1_2_and_1_3_use_forward_secret_aead_ciphers(
    tls_server: TLSServer, version: ssl.TLSVersion, name: str
) -> None:
    with _handshake(tls_server.port, tls_server.ca, version) as conn:
        assert conn.version() == name
        cipher = conn.cipher()
        assert cipher is not None
        assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
        if name == "TLSv1.2":
            assert cipher[0].startswith("ECDHE-")


def test_plain_http_on_the_tls_port_gets_no_answer(tls_server: TLSServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/health", timeout=5)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_redirect_port_sends_every_request_to_https(tls_server: TLSServer, method: str) -> None:
    resp = httpx.request(method, f"http://127.0.0.1:{tls_server.redirect_port}/items?limit=5")
    assert resp.status_code == 308
    assert resp.headers["location"] == f"https://127.0.0.1:{tls_server.port}/items?limit=5"
    assert "strict-transport-security" not in resp.headers


def test_the_redirect_leads_to_a_working_https_endpoint(tls_server: TLSServer) -> None:
    resp = httpx.get(
        f"http://localhost:{tls_server.redirect_port}/health",
        follow_redirects=True,
        verify=ssl.create_default_context(cafile=str(tls_server.ca)),
    )
    assert resp.status_code == 200
    assert str(resp.url) == f"https://localhost:{tls_server.port}/health"


def _write_cert(folder: Path, *, expired: bool = False) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=30), now - timedelta(days=1)) if expired else (now, now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end + timedelta(days=0 if expired else 30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "fullchain.pem", folder / "privkey.pem"


def _cases(tmp: Path) -> dict[str, tuple[dict[str, str], str]]:
    good_cert, good_key = _write_cert(tmp / "good")
    _, other_key = _write_cert(tmp / "other")
    old_cert, old_key = _write_cert(tmp / "old", expired=True)
    (tmp / "junk.pem").write_text("not a certificate\n")
    return {
        "missing-cert": (
            {"TLS_CERT": str(tmp / "nope.pem"), "TLS_KEY": str(good_key)},
            "TLS_CERT: cannot read",
        ),
        "missing-key": (
            {"TLS_CERT": str(good_cert), "TLS_KEY": str(tmp / "nope.pem")},
            "TLS_KEY: cannot read",
        ),
        "mismatched": (
            {"TLS_CERT": str(good_cert), "TLS_KEY": str(other_key)},
            "TLS_KEY: " + str(other_key) + " does not belong",
        ),
        "expired": ({"TLS_CERT": str(old_cert), "TLS_KEY": str(old_key)}, "expired on"),
        "not-pem": (
            {"TLS_CERT": str(tmp / "junk.pem"), "TLS_KEY": str(good_key)},
            "holds no PEM certificate",
        ),
    }


@pytest.mark.parametrize(
    "case", ["missing-cert", "missing-key", "mismatched", "expired", "not-pem"]
)
def test_start_up_refuses_an_unusable_certificate(
    database_url: str, tmp_path: Path, case: str
) -> None:
    env_extra, message = _cases(tmp_path)[case]
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=server_env(database_url, free_port(), **env_extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: TLS_"), result.stderr
    assert message in result.stderr
