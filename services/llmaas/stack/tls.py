"""The edge's TLS certificate: a local CA and a server certificate made once in the data directory (reused on later
starts, renewed when near expiry), or the operator's own certificate and key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_DIR = "tls"
CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.pem", "ca.key", "server.pem", "server.key"
CA_LIFETIME = dt.timedelta(days=3650)
# Browsers refuse leaf certificates valid for longer than 398 days; the same rule keeps a leaked key's life short.
SERVER_LIFETIME = dt.timedelta(days=397)
# A certificate with less than this left is replaced at start (a running stack does not reload it).
RENEW_BEFORE = dt.timedelta(days=30)
# A clock slightly behind on a client must not see a certificate from the future.
BACKDATE = dt.timedelta(minutes=5)


class TlsError(ValueError):
    """The operator's certificate or key cannot serve (unreadable, mismatched, expired)."""


@dataclass(frozen=True)
class EdgeTls:
    """What Envoy serves (cert_file: the chain, key_file) and what clients should trust (ca_file; None: the
    certificate chains to a CA the system already trusts)."""
    cert_file: Path
    key_file: Path
    ca_file: Path | None
    # "created", "renewed", "reused" (the generated certificate) or "supplied" (the operator's).
    origin: str = "supplied"


def server_names(hostname: str | None = None) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The names the server certificate covers: localhost and the host name, 127.0.0.1 and ::1."""
    names = ["localhost"]
    host = (hostname if hostname is not None else socket.gethostname()).strip().rstrip(".").lower()
    if host and host not in names:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            names.append(host)
    return names, [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic replacement; a key is 0600 from the moment its file exists."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, mode)  # whatever the umask
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_ca(now: dt.datetime, hostname: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "llmaas"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"llmaas local CA ({hostname or 'localhost'})"[:64])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _new_server(now: dt.datetime, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                dns: list[str], ips: list) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + SERVER_LIFETIME)
            .add_extension(x509.SubjectAlternativeName([*(x509.DNSName(n) for n in dns),
                                                        *(x509.IPAddress(ip) for ip in ips)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _load(cert_path: Path, key_path: Path):
    """(key, certificate) or None when missing or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key, cert


def _matches(key, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def _fresh(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now > RENEW_BEFORE


def _covers(cert: x509.Certificate, dns: list[str], ips: list) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(dns) <= set(san.get_values_for_type(x509.DNSName)) and \
        set(ips) <= set(san.get_values_for_type(x509.IPAddress))


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def generated_edge_tls(data_dir: Path, *, hostname: str | None = None, now: dt.datetime | None = None) -> EdgeTls:
    """The data directory's CA and server certificate (<data_dir>/tls/), made on first use and kept: a new server
    certificate when it nears expiry or the host's names changed, a new CA (and certificate) only when the CA itself
    nears expiry or is unreadable, since every client that trusts it must be given the new one."""
    now = now or _utcnow()
    host = hostname if hostname is not None else socket.gethostname()
    dns, ips = server_names(host)
    directory = data_dir / TLS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {name: directory / name for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)}
    ca = _load(paths[CA_CERT], paths[CA_KEY])
    server = _load(paths[SERVER_CERT], paths[SERVER_KEY])
    result = EdgeTls(paths[SERVER_CERT], paths[SERVER_KEY], paths[CA_CERT], origin="reused")
    if ca is None or not _matches(*ca) or not _fresh(ca[1], now):
        origin = "created" if ca is None and server is None else "renewed"
        ca = _new_ca(now, host)
        _write(paths[CA_KEY], _key_pem(ca[0]), 0o600)
        _write(paths[CA_CERT], _cert_pem(ca[1]), 0o600)  # like all the data directory: the owner's only
        server = None
    else:
        origin = "renewed"
    if (server is not None and _matches(*server) and _fresh(server[1], now) and _covers(server[1], dns, ips)
            and _issued_by(server[1], ca[1])):
        return result
    key, cert = _new_server(now, ca[0], ca[1], dns, ips)
    _write(paths[SERVER_KEY], _key_pem(key), 0o600)
    _write(paths[SERVER_CERT], _cert_pem(cert), 0o600)
    return EdgeTls(paths[SERVER_CERT], paths[SERVER_KEY], paths[CA_CERT], origin=origin)


def supplied_edge_tls(cert_file: Path, key_file: Path, ca_file: Path | None = None,
                      now: dt.datetime | None = None) -> EdgeTls:
    """The operator's certificate (PEM, the server's first, then any intermediates) and key, checked before Envoy
    is given them: readable, the key is the certificate's, valid now. ca_file: what clients should trust."""
    now = now or _utcnow()
    try:
        chain = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if ca_file is not None:
            x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise TlsError(f"cannot use the TLS certificate/key: {e}") from None
    if not _matches(key, chain[0]):
        raise TlsError(f"{key_file} is not the key of the certificate in {cert_file}")
    if not chain[0].not_valid_before_utc <= now < chain[0].not_valid_after_utc:
        raise TlsError(f"the certificate in {cert_file} is not valid now (valid "
                       f"{chain[0].not_valid_before_utc:%Y-%m-%d} to {chain[0].not_valid_after_utc:%Y-%m-%d})")
    return EdgeTls(Path(cert_file).resolve(), Path(key_file).resolve(),
                   Path(ca_file).resolve() if ca_file is not None else None)
