"""TLS for the orchestrator and its agents.

The orchestrator serves HTTPS by default. ``fedguard certs init`` creates a small
local certificate authority and a server certificate signed by it; agents trust that
CA file only, so a server whose certificate was issued by anyone else is refused.
Plain HTTP needs an explicit ``--insecure-http`` (:func:`check_transport`,
:func:`check_server_url`).

Certificates follow the CA/Browser Forum profile that OpenSSL's strict verification
expects: the CA has critical basic constraints (CA, path length 0) and a critical
key usage limited to certificate and CRL signing; the server certificate is not a CA,
carries a critical digital-signature key usage (plus key encipherment for RSA), the
TLS server extended key usage, subject alternative names for every name clients dial,
and subject and authority key identifiers.
"""

import datetime
import ipaddress
import logging
import os
import re
import secrets
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedguard.errors import ConfigError
from fedguard.files import write_file_atomically

logger = logging.getLogger(__name__)

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Names every local deployment is reached by; operators add their own with --hostname.
DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
SERVER_CERT_NAME = "server.pem"
SERVER_KEY_NAME = "server-key.pem"

# AEAD suites with forward secrecy only. TLS 1.0 and 1.1 define no AEAD suite, so this
# list also rules them out whatever the system OpenSSL policy says; TLS 1.3 suites
# are configured separately by OpenSSL and stay at their (AEAD-only) defaults.
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

RSA_KEY_BITS = 3072
MAX_DAYS = 3650

# Clocks of the machines involved may disagree slightly; a certificate issued "now"
# should not be rejected as not yet valid by a client a minute behind.
_BACKDATE = datetime.timedelta(minutes=5)

_DNS_NAME = re.compile(
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

Clock = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class TLSConfig:
    """The ``[tls]`` section of the configuration.

    ``cert_file`` and ``key_file`` are the server's certificate (chain) and private
    key; ``ca_file`` is the certificate authority agents trust. On the server,
    ``ca_file`` is optional and only used to check at startup that the certificate
    was really issued by that CA.
    """

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(
                "[tls] cert_file and key_file must be set together; got "
                f"cert_file={_show(self.cert_file)} and key_file={_show(self.key_file)}"
            )

    @property
    def serves_tls(self) -> bool:
        """Whether a server certificate and key are configured."""
        return self.cert_file is not None

    @classmethod
    def from_mapping(
        cls, section: Mapping[str, object], *, base_dir: Path | None = None
    ) -> "TLSConfig":
        """Build from a parsed ``[tls]`` table; relative paths are taken from
        ``base_dir`` (the directory of the configuration file)."""
        unknown = sorted(set(section) - {"cert_file", "key_file", "ca_file"})
        if unknown:
            raise ConfigError(
                f"unknown setting [tls] {unknown[0]}; accepted: cert_file, key_file, "
                "ca_file"
            )

        def path(name: str) -> Path | None:
            value = section.get(name)
            if value is None:
                return None
            if not isinstance(value, str | os.PathLike) or not str(value):
                raise ConfigError(f"[tls] {name} must be a file path; got {value!r}")
            resolved = Path(value).expanduser()
            if base_dir is not None and not resolved.is_absolute():
                resolved = base_dir / resolved
            return resolved

        return cls(path("cert_file"), path("key_file"), path("ca_file"))


def _show(path: Path | None) -> str:
    return "(unset)" if path is None else str(path)


@dataclass(frozen=True)
class CertificatePaths:
    """Where :func:`init_certificates` wrote its files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def tls_config(self) -> TLSConfig:
        """The ``[tls]`` settings that use these files."""
        return TLSConfig(self.server_cert, self.server_key, self.ca_cert)


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its certificate and signing key."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)


# --- generation --------------------------------------------------------------------


def generate_private_key(key_type: KeyType = "ec") -> PrivateKey:
    """A new EC P-256 or RSA 3072 private key."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ConfigError(f"key type must be 'ec' or 'rsa'; got {key_type!r}")


def create_authority(
    *, days: int = MAX_DAYS, key_type: KeyType = "ec", now: Clock = _utcnow
) -> Authority:
    """A new self-signed CA that may sign server certificates only (path length 0)."""
    _check_days("ca days", days)
    private_key = generate_private_key(key_type)
    # A random suffix tells two local CAs apart in error messages and trust stores.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedguard"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"fedguard local CA {secrets.token_hex(4)}"
            ),
        ]
    )
    public_key = private_key.public_key()

    start = now() - _BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    )
    return Authority(builder.sign(private_key, hashes.SHA256()), private_key)


def issue_server_certificate(
    authority: Authority,
    hostnames: Iterable[str] = DEFAULT_HOSTNAMES,
    *,
    days: int = 397,
    key_type: KeyType = "ec",
    now: Clock = _utcnow,
) -> tuple[x509.Certificate, PrivateKey]:
    """A TLS server certificate for ``hostnames`` (DNS names or IP addresses)."""
    _check_days("days", days)
    names = _unique(hostnames)
    if not names:
        raise ConfigError("hostnames must name at least one host; got none")
    alt_names = [_general_name(name) for name in names]

    private_key = generate_private_key(key_type)
    public_key = private_key.public_key()
    ca_key_id = authority.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])

    start = now() - _BACKDATE
    end = min(
        start + datetime.timedelta(days=days),
        authority.certificate.not_valid_after_utc,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            _key_usage(key_encipherment=isinstance(private_key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
    )
    return builder.sign(authority.private_key, hashes.SHA256()), private_key


def _key_usage(
    *, cert_sign: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _unique(hostnames: Iterable[str]) -> list[str]:
    names: list[str] = []
    for name in hostnames:
        if name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise ConfigError(f"hostname must be a DNS name or an IP address; got {name!r}")
    return x509.DNSName(name.lower())


def _check_days(parameter: str, days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"{parameter} must be between 1 and {MAX_DAYS}; got {days}")


# --- files -------------------------------------------------------------------------


def init_certificates(
    directory: Path,
    *,
    hostnames: Sequence[str] = (),
    days: int = 397,
    ca_days: int = MAX_DAYS,
    key_type: KeyType = "ec",
    force: bool = False,
    now: Clock = _utcnow,
) -> CertificatePaths:
    """Create a local CA and a server certificate in ``directory``.

    The server certificate names localhost, 127.0.0.1 and ::1 plus ``hostnames``.
    Private keys are written 0600, certificates 0644. Existing files are kept and the
    call fails unless ``force`` is set.
    """
    paths = certificate_paths(directory)
    existing = [p for p in _all_paths(paths) if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise ConfigError(
            f"refusing to overwrite existing {names}; pass --force to replace them"
        )

    authority = create_authority(days=ca_days, key_type=key_type, now=now)
    certificate, private_key = issue_server_certificate(
        authority,
        [*DEFAULT_HOSTNAMES, *hostnames],
        days=days,
        key_type=key_type,
        now=now,
    )

    _make_private_dir(directory)
    write_private_key(paths.ca_key, authority.private_key)
    write_certificate(paths.ca_cert, authority.certificate)
    write_private_key(paths.server_key, private_key)
    write_certificate(paths.server_cert, certificate)
    logger.info("created local CA and server certificate in %s", directory)
    return paths


def renew_server_certificate(
    directory: Path,
    *,
    hostnames: Sequence[str] = (),
    days: int = 397,
    now: Clock = _utcnow,
) -> CertificatePaths:
    """Issue a new server certificate and key from the CA already in ``directory``.

    Agents keep trusting the same ``ca.pem``; only the server files are replaced.
    """
    paths = certificate_paths(directory)
    authority = load_authority(paths.ca_cert, paths.ca_key)
    key_type: KeyType = (
        "rsa" if isinstance(authority.private_key, rsa.RSAPrivateKey) else "ec"
    )
    certificate, private_key = issue_server_certificate(
        authority,
        [*DEFAULT_HOSTNAMES, *hostnames],
        days=days,
        key_type=key_type,
        now=now,
    )

    write_private_key(paths.server_key, private_key)
    write_certificate(paths.server_cert, certificate)
    logger.info("renewed server certificate in %s", directory)
    return paths


def certificate_paths(directory: Path) -> CertificatePaths:
    """The file names :func:`init_certificates` uses in ``directory``."""
    return CertificatePaths(
        directory / CA_CERT_NAME,
        directory / CA_KEY_NAME,
        directory / SERVER_CERT_NAME,
        directory / SERVER_KEY_NAME,
    )


def _all_paths(paths: CertificatePaths) -> list[Path]:
    return [paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key]


def load_authority(cert_file: Path, key_file: Path) -> Authority:
    """Read the CA certificate and key that :func:`init_certificates` wrote."""
    certificate = load_certificate(cert_file)
    try:
        private_key = serialization.load_pem_private_key(
            key_file.read_bytes(), password=None
        )
    except FileNotFoundError:
        raise ConfigError(
            f"CA key file {key_file} does not exist; run `fedguard certs init`"
        ) from None
    except ValueError:
        raise ConfigError(f"CA key file {key_file} is not a PEM private key") from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"CA key file {key_file} must hold an EC or RSA key")
    return Authority(certificate, private_key)


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file, with errors that name the file."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"certificate file {path} does not exist") from None
    except ValueError:
        raise ConfigError(f"certificate file {path} is not a PEM certificate") from None


def write_private_key(path: Path, private_key: PrivateKey) -> None:
    """Write ``private_key`` as unencrypted PKCS#8 PEM, mode 0600."""
    data = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file_atomically(path, data, mode=0o600)


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    """Write ``certificate`` as PEM, mode 0644 (certificates are public)."""
    data = certificate.public_bytes(serialization.Encoding.PEM)
    write_file_atomically(path, data, mode=0o644)


def _make_private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)


# --- server and client settings ------------------------------------------------------


def check_transport(tls: TLSConfig | None, *, insecure_http: bool) -> None:
    """Refuse to start a server without TLS unless plain HTTP was asked for.

    Called by ``fedguard server`` before it binds. With TLS configured, also checks
    that the files exist, that the key matches the certificate, that the
    certificate is currently valid and, when ``ca_file`` is set, that the CA issued
    it, so that a misconfiguration fails at startup rather than at the first agent.
    """
    serves_tls = tls is not None and tls.serves_tls
    if not serves_tls and not insecure_http:
        raise ConfigError(
            "no TLS certificate configured: create one with "
            "`fedguard certs init --dir DIR` and set [tls] cert_file and key_file, "
            "or pass --insecure-http to serve plain HTTP"
        )
    if serves_tls and insecure_http:
        raise ConfigError(
            "--insecure-http contradicts the [tls] cert_file setting; remove one"
        )
    if tls is not None and serves_tls:
        _check_server_files(tls)
        return

    logger.warning(
        "serving plain HTTP (--insecure-http): credentials and updates travel "
        "unprotected; use only on a trusted loopback or test network"
    )


def _check_server_files(tls: TLSConfig) -> None:
    assert tls.cert_file is not None and tls.key_file is not None
    certificate = load_certificate(tls.cert_file)
    if not tls.key_file.exists():
        raise ConfigError(f"[tls] key_file {tls.key_file} does not exist")
    if tls.key_file.stat().st_mode & 0o077:
        logger.warning(
            "[tls] key_file %s is readable by other users; run chmod 600 on it",
            tls.key_file,
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError:
        raise ConfigError(
            f"[tls] key_file {tls.key_file} does not match cert_file {tls.cert_file}"
        ) from None

    expires = certificate.not_valid_after_utc
    if expires <= _utcnow():
        raise ConfigError(
            f"[tls] cert_file {tls.cert_file} expired on {expires:%Y-%m-%d}; "
            "run `fedguard certs renew --dir DIR`"
        )
    if tls.ca_file is not None:
        _check_issued_by(certificate, tls)


def _check_issued_by(certificate: x509.Certificate, tls: TLSConfig) -> None:
    assert tls.ca_file is not None
    authority = load_certificate(tls.ca_file)
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        raise ConfigError(
            f"[tls] cert_file {tls.cert_file} was not issued by ca_file {tls.ca_file}"
        ) from None


def server_ssl_kwargs(tls: TLSConfig) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that serve ``tls``.

    Python 3.10 and later already refuse protocols below TLS 1.2 on a server
    context; the cipher list enforces the same independently of the system policy.
    """
    if not tls.serves_tls:
        raise ConfigError("[tls] cert_file and key_file are required to serve TLS")
    return {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
        "ssl_version": ssl.PROTOCOL_TLS_SERVER,
        "ssl_ciphers": SERVER_CIPHERS,
    }


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context an agent hands to ``httpx.Client(verify=...)``.

    With ``ca_file`` the agent trusts that CA bundle and nothing else (not the
    system store), so only a server certificate issued by the federation's CA is
    accepted. Without it, the system trust store is used (a server with a publicly
    trusted certificate). Hostname checking is always on; TLS 1.2 is the minimum.
    """
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(
            f"CA file {ca_file} does not exist; copy ca.pem from the directory "
            "given to `fedguard certs init` on the server"
        )
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if ca_file is None else str(ca_file)
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def untrusted_server_error(
    error: BaseException, ca_file: Path | None
) -> ConfigError | None:
    """A clear error if ``error`` (say an ``httpx.ConnectError``) was caused by a
    server certificate this agent does not trust, else None.

    Certificate failures are not transient: an agent should stop and say so rather
    than retry as if the server were down.
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None

    reason = cause.verify_message or "certificate verify failed"
    trusted = f"CA file {ca_file}" if ca_file else "the system trust store"
    return ConfigError(
        f"the server's TLS certificate is not trusted ({reason}); check that "
        f"{trusted} is the ca.pem from the server's `fedguard certs init` and that "
        "the server URL names a host in its certificate"
    )


def check_server_url(url: str, *, insecure_http: bool) -> None:
    """Refuse an ``http://`` server URL on an agent unless plain HTTP was asked for."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "https":
        return
    if scheme == "http" and insecure_http:
        logger.warning("talking plain HTTP to %s (--insecure-http)", url)
        return
    if scheme == "http":
        raise ConfigError(
            f"server URL {url!r} is plain HTTP; use https:// and the federation's "
            "CA file (created by `fedguard certs init`), or pass --insecure-http"
        )
    raise ConfigError(f"server URL must start with https://; got {url!r}")
