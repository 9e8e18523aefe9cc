"""Certificates, TLS settings and the plain-HTTP rule (fedguard.security.tls)."""

import datetime
import ipaddress
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi import FastAPI

from fedguard.errors import ConfigError
from fedguard.security.tls import (
    CertificatePaths,
    TLSConfig,
    check_server_url,
    check_transport,
    client_ssl_context,
    create_authority,
    init_certificates,
    issue_server_certificate,
    load_certificate,
    renew_server_certificate,
    server_ssl_kwargs,
    untrusted_server_error,
    write_certificate,
    write_private_key,
)

FIXED = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def fixed_clock() -> datetime.datetime:
    return FIXED


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    directory = tmp_path_factory.mktemp("tls") / "certs"
    return init_certificates(directory, hostnames=["fedguard.example.test", "10.1.2.3"])


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unrelated CA: what an agent trusting the wrong authority holds."""
    return init_certificates(tmp_path_factory.mktemp("other") / "certs").ca_cert


def tls_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def extension(certificate: x509.Certificate, kind: type) -> x509.Extension:  # type: ignore[type-arg]
    return certificate.extensions.get_extension_for_class(kind)


# --- files ----------------------------------------------------------------------------


def test_init_writes_keys_0600_and_certificates_0644(certs: CertificatePaths) -> None:
    modes = {
        path.name: path.stat().st_mode & 0o777
        for path in (certs.ca_key, certs.server_key, certs.ca_cert, certs.server_cert)
    }

    assert modes == {
        "ca-key.pem": 0o600,
        "server-key.pem": 0o600,
        "ca.pem": 0o644,
        "server.pem": 0o644,
    }
    assert certs.ca_cert.parent.stat().st_mode & 0o777 == 0o700


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = init_certificates(tmp_path)
    before = first.ca_cert.read_bytes()

    with pytest.raises(ConfigError, match=r"refusing to overwrite .*ca\.pem.*--force"):
        init_certificates(tmp_path)
    assert first.ca_cert.read_bytes() == before

    init_certificates(tmp_path, force=True)
    assert first.ca_cert.read_bytes() != before


def test_init_refuses_when_any_single_file_exists(tmp_path: Path) -> None:
    (tmp_path / "server-key.pem").write_text("keep me")

    with pytest.raises(ConfigError, match=r"server-key\.pem"):
        init_certificates(tmp_path)
    assert (tmp_path / "server-key.pem").read_text() == "keep me"
    assert not (tmp_path / "ca.pem").exists()


# --- certificate profile --------------------------------------------------------------


def test_server_certificate_names_loopback_and_given_hosts(
    certs: CertificatePaths,
) -> None:
    certificate = load_certificate(certs.server_cert)
    names = extension(certificate, x509.SubjectAlternativeName).value

    assert names.get_values_for_type(x509.DNSName) == [
        "localhost",
        "fedguard.example.test",
    ]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]


def test_server_certificate_is_a_tls_server_leaf(certs: CertificatePaths) -> None:
    certificate = load_certificate(certs.server_cert)
    authority = load_certificate(certs.ca_cert)

    constraints = extension(certificate, x509.BasicConstraints)
    usage = extension(certificate, x509.KeyUsage)
    purposes = extension(certificate, x509.ExtendedKeyUsage).value

    assert constraints.critical and constraints.value.ca is False
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert list(purposes) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert certificate.public_key().curve.name == "secp256r1"
    certificate.verify_directly_issued_by(authority)
    authority_key = extension(certificate, x509.AuthorityKeyIdentifier).value
    subject_key = extension(authority, x509.SubjectKeyIdentifier).value
    assert authority_key.key_identifier == subject_key.digest


def test_authority_signs_certificates_only(certs: CertificatePaths) -> None:
    authority = load_certificate(certs.ca_cert)

    constraints = extension(authority, x509.BasicConstraints)
    usage = extension(authority, x509.KeyUsage)

    assert constraints.critical and constraints.value.ca
    assert constraints.value.path_length == 0
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature


def test_validity_follows_the_injected_clock() -> None:
    authority = create_authority(days=100, now=fixed_clock)
    certificate, _ = issue_server_certificate(authority, days=30, now=fixed_clock)

    start = FIXED - datetime.timedelta(minutes=5)
    assert certificate.not_valid_before_utc == start
    assert certificate.not_valid_after_utc == start + datetime.timedelta(days=30)
    assert authority.certificate.not_valid_after_utc == start + datetime.timedelta(
        days=100
    )


def test_server_certificate_never_outlives_its_authority() -> None:
    authority = create_authority(days=10, now=fixed_clock)
    certificate, _ = issue_server_certificate(authority, days=397, now=fixed_clock)

    assert certificate.not_valid_after_utc == authority.certificate.not_valid_after_utc


def test_rsa_keys_are_3072_bits_with_key_encipherment(tmp_path: Path) -> None:
    paths = init_certificates(tmp_path, key_type="rsa")
    certificate = load_certificate(paths.server_cert)

    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 3072
    assert extension(certificate, x509.KeyUsage).value.key_encipherment


@pytest.mark.parametrize(
    ("hostnames", "days", "message"),
    [
        (["bad host"], 30, r"hostname must be a DNS name or an IP address; got 'bad"),
        (["-leading.example"], 30, r"hostname must be .*got '-leading"),
        (["ok.example"], 0, r"days must be between 1 and 3650; got 0"),
        (["ok.example"], 4000, r"days must be between 1 and 3650; got 4000"),
    ],
)
def test_bad_certificate_options_are_refused(
    tmp_path: Path, hostnames: list[str], days: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        init_certificates(tmp_path, hostnames=hostnames, days=days)
    assert list(tmp_path.iterdir()) == []


def test_renew_keeps_the_authority(tmp_path: Path) -> None:
    paths = init_certificates(tmp_path)
    ca_before = paths.ca_cert.read_bytes()
    server_before = paths.server_cert.read_bytes()

    renew_server_certificate(tmp_path, hostnames=["renewed.example"], days=30)

    assert paths.ca_cert.read_bytes() == ca_before
    assert paths.server_cert.read_bytes() != server_before
    renewed = load_certificate(paths.server_cert)
    renewed.verify_directly_issued_by(load_certificate(paths.ca_cert))
    names = extension(renewed, x509.SubjectAlternativeName).value
    assert "renewed.example" in names.get_values_for_type(x509.DNSName)
    assert paths.server_key.stat().st_mode & 0o777 == 0o600


# --- configuration --------------------------------------------------------------------


def test_tls_config_from_mapping_resolves_relative_paths(tmp_path: Path) -> None:
    config = TLSConfig.from_mapping(
        {"cert_file": "certs/server.pem", "key_file": "/abs/key.pem"},
        base_dir=tmp_path,
    )

    assert config.cert_file == tmp_path / "certs/server.pem"
    assert config.key_file == Path("/abs/key.pem")
    assert config.ca_file is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"cert": "x"}, r"unknown setting \[tls\] cert; accepted: cert_file"),
        ({"cert_file": "x.pem"}, r"cert_file and key_file must be set together"),
        ({"key_file": 3, "cert_file": "a"}, r"\[tls\] key_file must be a file path"),
    ],
)
def test_tls_config_rejects_bad_sections(
    section: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TLSConfig.from_mapping(section)


def test_plain_http_needs_explicit_flag() -> None:
    with pytest.raises(ConfigError, match=r"fedguard certs init.*--insecure-http"):
        check_transport(None, insecure_http=False)
    with pytest.raises(ConfigError, match=r"--insecure-http"):
        check_transport(TLSConfig(ca_file=Path("ca.pem")), insecure_http=False)

    check_transport(None, insecure_http=True)


def test_insecure_http_contradicting_tls_is_refused(certs: CertificatePaths) -> None:
    with pytest.raises(ConfigError, match=r"--insecure-http contradicts"):
        check_transport(certs.tls_config(), insecure_http=True)


def test_valid_tls_files_pass_the_startup_check(certs: CertificatePaths) -> None:
    check_transport(certs.tls_config(), insecure_http=False)


def test_startup_check_catches_a_key_of_another_certificate(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    other = init_certificates(tmp_path)
    config = TLSConfig(certs.server_cert, other.server_key)

    with pytest.raises(ConfigError, match=r"key_file .* does not match cert_file"):
        check_transport(config, insecure_http=False)


def test_startup_check_catches_a_certificate_from_another_ca(
    certs: CertificatePaths, other_ca: Path
) -> None:
    config = TLSConfig(certs.server_cert, certs.server_key, other_ca)

    with pytest.raises(ConfigError, match=r"was not issued by ca_file"):
        check_transport(config, insecure_http=False)


def test_startup_check_catches_an_expired_certificate(tmp_path: Path) -> None:
    long_ago = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    authority = create_authority(now=lambda: long_ago)
    certificate, key = issue_server_certificate(authority, days=1, now=lambda: long_ago)
    write_certificate(tmp_path / "server.pem", certificate)
    write_private_key(tmp_path / "server-key.pem", key)

    config = TLSConfig(tmp_path / "server.pem", tmp_path / "server-key.pem")
    with pytest.raises(ConfigError, match=r"expired on 2001-01-01.*certs renew"):
        check_transport(config, insecure_http=False)


def test_startup_check_names_a_missing_file(tmp_path: Path) -> None:
    config = TLSConfig(tmp_path / "nope.pem", tmp_path / "nope-key.pem")

    with pytest.raises(ConfigError, match=r"certificate file .*nope\.pem does not"):
        check_transport(config, insecure_http=False)


def test_server_ssl_kwargs_for_uvicorn(certs: CertificatePaths) -> None:
    options = server_ssl_kwargs(certs.tls_config())

    assert options["ssl_certfile"] == str(certs.server_cert)
    assert options["ssl_keyfile"] == str(certs.server_key)
    assert options["ssl_version"] == ssl.PROTOCOL_TLS_SERVER
    assert "ECDHE" in options["ssl_ciphers"]
    with pytest.raises(ConfigError, match=r"cert_file and key_file are required"):
        server_ssl_kwargs(TLSConfig())


def test_client_context_verifies_hostname_and_chain(certs: CertificatePaths) -> None:
    context = client_ssl_context(certs.ca_cert)

    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1


def test_client_context_names_a_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CA file .*ca\.pem does not exist"):
        client_ssl_context(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("url", "insecure", "message"),
    [
        ("http://127.0.0.1:8443", False, r"plain HTTP; use https://.*--insecure-http"),
        ("ftp://127.0.0.1", True, r"must start with https://; got 'ftp"),
        ("127.0.0.1:8443", False, r"must start with https://"),
    ],
)
def test_agent_refuses_plain_http_urls(url: str, insecure: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_server_url(url, insecure_http=insecure)


def test_agent_accepts_https_and_explicit_plain_http() -> None:
    check_server_url("https://127.0.0.1:8443", insecure_http=False)
    check_server_url("HTTP://127.0.0.1:8080", insecure_http=True)


# --- real TLS on loopback -------------------------------------------------------------


def test_agent_reaches_a_server_signed_by_its_ca(
    certs: CertificatePaths, loopback_server: Callable[..., str]
) -> None:
    url = loopback_server(tls_app(), **server_ssl_kwargs(certs.tls_config()))

    with httpx.Client(verify=client_ssl_context(certs.ca_cert)) as client:
        response = client.get(f"{url}/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_agent_refuses_a_server_signed_by_another_ca(
    certs: CertificatePaths, other_ca: Path, loopback_server: Callable[..., str]
) -> None:
    url = loopback_server(tls_app(), **server_ssl_kwargs(certs.tls_config()))

    with (
        httpx.Client(verify=client_ssl_context(other_ca)) as client,
        pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED") as caught,
    ):
        client.get(f"{url}/health")

    explained = untrusted_server_error(caught.value, other_ca)
    assert explained is not None
    assert "not trusted (unable to get local issuer certificate)" in str(explained)
    assert str(other_ca) in str(explained)


def test_agent_refuses_a_certificate_for_another_host(
    certs: CertificatePaths, tmp_path: Path, loopback_server: Callable[..., str]
) -> None:
    from fedguard.security.tls import load_authority

    authority = load_authority(certs.ca_cert, certs.ca_key)
    certificate, key = issue_server_certificate(authority, ["elsewhere.example"])
    write_certificate(tmp_path / "server.pem", certificate)
    write_private_key(tmp_path / "server-key.pem", key)
    config = TLSConfig(tmp_path / "server.pem", tmp_path / "server-key.pem")
    url = loopback_server(tls_app(), **server_ssl_kwargs(config))

    with (
        httpx.Client(verify=client_ssl_context(certs.ca_cert)) as client,
        pytest.raises(
            httpx.ConnectError, match=r"Hostname mismatch|IP address"
        ) as caught,
    ):
        client.get(f"{url}/health")

    assert "not trusted" in str(untrusted_server_error(caught.value, certs.ca_cert))


def test_other_connection_failures_are_not_blamed_on_tls(
    certs: CertificatePaths,
) -> None:
    with (
        httpx.Client(verify=client_ssl_context(certs.ca_cert)) as client,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        client.get("https://127.0.0.1:1/health")

    assert untrusted_server_error(caught.value, certs.ca_cert) is None


def test_server_refuses_tls_below_1_2(
    certs: CertificatePaths, loopback_server: Callable[..., str]
) -> None:
    url = loopback_server(tls_app(), **server_ssl_kwargs(certs.tls_config()))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(certs.ca_cert)
    # Security level 0 lets this client offer TLS 1.1, so the refusal is the server's.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        # Deliberately deprecated: this client plays an outdated peer.
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1

    with (
        httpx.Client(verify=old) as client,
        pytest.raises(httpx.ConnectError, match=r"(?i)version|protocol|cipher"),
    ):
        client.get(f"{url}/health")
