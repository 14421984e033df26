"""The edge's certificate (llmaas.stack.tls): made once in the data directory, reused, renewed near expiry, and the
operator's own checked; Envoy's listener rendered with TLS 1.3 only, or plain HTTP when asked."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from cryptography import x509
from llmaas.cli.main import app
from llmaas.stack import envoy, tls
from llmaas.stack.ports import StackPorts
from llmaas.stack.up import StackOptions, TlsSetupError, edge_tls
from typer.testing import CliRunner

NOW = dt.datetime(2027, 1, 10, tzinfo=dt.timezone.utc)


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _files(data_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (data_dir / tls.TLS_DIR).iterdir()}


def test_first_start_makes_a_ca_and_a_server_certificate_for_the_local_names(tmp_path):
    made = tls.generated_edge_tls(tmp_path, hostname="box.example", now=NOW)
    assert made.origin == "created"
    assert made.ca_file == tmp_path / "tls" / "ca.pem"
    for path in (made.key_file, tmp_path / "tls" / "ca.key", made.cert_file, made.ca_file):  # all private
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    server, ca = _cert(made.cert_file), _cert(made.ca_file)
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "box.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                           ipaddress.ip_address("::1")}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.not_valid_after_utc - NOW <= dt.timedelta(days=398)


def _handshake(made: tls.EdgeTls, server_name: str) -> str:
    """A TLS handshake over a socket pair, the client verifying as Python 3.13's defaults do (X.509 strict): the
    negotiated version."""
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(made.cert_file, made.key_file)
    client_side = ssl.create_default_context(cafile=str(made.ca_file))
    client_side.verify_flags |= ssl.VERIFY_X509_STRICT
    a, b = socket.socketpair()
    with ThreadPoolExecutor(1) as pool, a, b:
        served = pool.submit(lambda: server_side.wrap_socket(a, server_side=True).close())
        with client_side.wrap_socket(b, server_hostname=server_name) as client:
            version = client.version()
        served.result(timeout=10)
    return version


@pytest.mark.parametrize("name", ["127.0.0.1", "::1", "localhost", "box.example"])
def test_python_clients_verify_the_certificate_for_every_local_name(tmp_path, name):
    made = tls.generated_edge_tls(tmp_path, hostname="box.example")
    assert _handshake(made, name).startswith("TLS")


def test_a_name_outside_the_certificate_is_refused(tmp_path):
    made = tls.generated_edge_tls(tmp_path, hostname="box.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(made, "elsewhere.example")


def test_later_starts_reuse_the_same_files(tmp_path):
    tls.generated_edge_tls(tmp_path, hostname="box", now=NOW)
    before = _files(tmp_path)
    again = tls.generated_edge_tls(tmp_path, hostname="box", now=NOW + dt.timedelta(days=100))
    assert again.origin == "reused"
    assert _files(tmp_path) == before


def test_a_server_certificate_near_expiry_is_renewed_under_the_same_ca(tmp_path):
    tls.generated_edge_tls(tmp_path, hostname="box", now=NOW)
    before = _files(tmp_path)
    later = NOW + tls.SERVER_LIFETIME - tls.RENEW_BEFORE + dt.timedelta(days=1)
    renewed = tls.generated_edge_tls(tmp_path, hostname="box", now=later)
    after = _files(tmp_path)
    assert renewed.origin == "renewed"
    assert after["ca.pem"] == before["ca.pem"] and after["ca.key"] == before["ca.key"]  # clients keep trusting
    assert after["server.pem"] != before["server.pem"] and after["server.key"] != before["server.key"]
    assert _cert(renewed.cert_file).not_valid_after_utc > later + tls.RENEW_BEFORE
    _cert(renewed.cert_file).verify_directly_issued_by(_cert(renewed.ca_file))


def test_a_new_host_name_gets_a_new_server_certificate(tmp_path):
    tls.generated_edge_tls(tmp_path, hostname="box", now=NOW)
    ca = _files(tmp_path)["ca.pem"]
    renamed = tls.generated_edge_tls(tmp_path, hostname="other-box", now=NOW)
    assert renamed.origin == "renewed" and _files(tmp_path)["ca.pem"] == ca
    san = _cert(renamed.cert_file).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "other-box" in san.get_values_for_type(x509.DNSName)


def test_a_ca_near_expiry_or_damaged_is_replaced_with_its_certificate(tmp_path):
    tls.generated_edge_tls(tmp_path, hostname="box", now=NOW)
    before = _files(tmp_path)
    late = tls.generated_edge_tls(tmp_path, hostname="box", now=NOW + tls.CA_LIFETIME - dt.timedelta(days=1))
    assert late.origin == "renewed" and _files(tmp_path)["ca.pem"] != before["ca.pem"]
    (tmp_path / "tls" / "ca.key").write_text("not a key")
    repaired = tls.generated_edge_tls(tmp_path, hostname="box")
    assert repaired.origin == "renewed"
    _cert(repaired.cert_file).verify_directly_issued_by(_cert(repaired.ca_file))


def test_the_operators_certificate_is_checked_before_use(tmp_path):
    own = tls.generated_edge_tls(tmp_path / "elsewhere", hostname="box")
    supplied = tls.supplied_edge_tls(own.cert_file, own.key_file, own.ca_file)
    assert (supplied.cert_file, supplied.key_file, supplied.ca_file, supplied.origin) == (
        own.cert_file, own.key_file, own.ca_file, "supplied")
    assert tls.supplied_edge_tls(own.cert_file, own.key_file).ca_file is None  # a CA the system trusts
    with pytest.raises(tls.TlsError, match="is not the key"):
        tls.supplied_edge_tls(own.cert_file, tmp_path / "elsewhere" / "tls" / "ca.key")
    with pytest.raises(tls.TlsError, match="not valid now"):
        tls.supplied_edge_tls(own.cert_file, own.key_file, now=NOW + dt.timedelta(days=3000))
    with pytest.raises(tls.TlsError, match="cannot use"):
        tls.supplied_edge_tls(tmp_path / "missing.pem", own.key_file)


def test_the_stack_serves_tls_unless_plain_http_is_asked_for(tmp_path):
    default = edge_tls(StackOptions(data_dir=tmp_path), tmp_path)
    assert default is not None and default.cert_file.parent == tmp_path / "tls"
    assert edge_tls(StackOptions(data_dir=tmp_path, insecure_http=True), tmp_path) is None
    with pytest.raises(TlsSetupError, match="go together"):
        edge_tls(StackOptions(data_dir=tmp_path, tls_cert_file=default.cert_file), tmp_path)
    with pytest.raises(TlsSetupError, match="is not the key"):
        edge_tls(StackOptions(data_dir=tmp_path, tls_cert_file=default.cert_file,
                              tls_key_file=tmp_path / "tls" / "ca.key"), tmp_path)


def _listener(config: str) -> dict:
    return yaml.safe_load(config)["static_resources"]["listeners"][0]


def test_envoy_listener_is_tls_1_3_only_with_h2_and_http1(tmp_path):
    made = tls.generated_edge_tls(tmp_path)
    rendered = yaml.safe_load(envoy.render_config(StackPorts(20000), tls=made, internal_secret="s" * 32))
    chain = rendered["static_resources"]["listeners"][0]["filter_chains"][0]
    context = chain["transport_socket"]["typed_config"]
    assert context["@type"].endswith("DownstreamTlsContext")
    common = context["common_tls_context"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_certificates"] == [{"certificate_chain": {"filename": str(made.cert_file)},
                                           "private_key": {"filename": str(made.key_file)}}]
    assert chain["filters"][0]["name"] == "envoy.filters.network.http_connection_manager"
    # Envoy's admin interface: loopback, plain HTTP, as before.
    assert rendered["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_envoy_listener_without_tls_is_plain_http():
    chain = _listener(envoy.render_config(StackPorts(20000), internal_secret="s" * 32))["filter_chains"][0]
    assert "transport_socket" not in chain
    assert chain["filters"][0]["name"] == "envoy.filters.network.http_connection_manager"


@pytest.mark.parametrize("options", [["--insecure-http", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
                                     ["--tls-cert", "c.pem"], ["--tls-key", "k.pem"], ["--tls-ca", "ca.pem"]])
def test_llmaas_up_refuses_tls_options_that_do_not_go_together(options, tmp_path):
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path), *options])
    assert result.exit_code == 2 and ("--tls-cert" in result.output or "--insecure-http" in result.output)
    assert not (tmp_path / "tls").exists()
