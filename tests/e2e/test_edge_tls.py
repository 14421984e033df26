"""The edge speaks TLS 1.3 only, with the certificate `llmaas up` made in the data directory: TLS 1.2 refused, the
OpenAI SDK verifying against stack.json's CA served, a client that does not trust that CA refused, plain HTTP on the
TLS port answered with nothing. (A stack started with --insecure-http serves plain HTTP: tests/e2e/test_guard_triton.)"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import httpx
import openai
import pytest

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e


def _edge(stack) -> tuple[str, int]:
    url = urlsplit(stack["base_url"])
    return url.hostname, url.port


def _s_client(stack, *options: str) -> subprocess.CompletedProcess:
    host, port = _edge(stack)
    return subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
                           "-CAfile", stack["ca_file"], "-verify_return_error", *options],
                          input="", capture_output=True, text=True, timeout=30)


def test_stack_file_gives_https_urls_and_the_ca(stack):
    assert stack["base_url"].startswith("https://127.0.0.1:") and stack["admin_url"].startswith("https://")
    ca = Path(stack["ca_file"])
    assert ca == Path(stack["data_dir"]).resolve() / "tls" / "ca.pem"
    assert (ca.parent / "server.key").stat().st_mode & 0o077 == 0


def test_openssl_tls_1_2_is_refused(stack):
    done = _s_client(stack, "-tls1_2")
    assert done.returncode != 0
    assert "New, (NONE), Cipher is (NONE)" in done.stdout and "no peer certificate available" in done.stdout
    assert "alert protocol version" in done.stderr, done.stderr


def test_openssl_tls_1_3_is_accepted_and_verified(stack):
    done = _s_client(stack, "-tls1_3", "-alpn", "h2,http/1.1", "-verify_ip", _edge(stack)[0])
    assert done.returncode == 0, done.stderr
    assert "New, TLSv1.3" in done.stdout
    assert "Verify return code: 0 (ok)" in done.stdout
    assert "ALPN protocol: h2" in done.stdout


def test_python_tls_1_2_client_is_refused_and_1_3_with_http1_or_h2_accepted(stack):
    host, port = _edge(stack)
    old = ssl.create_default_context(cafile=stack["ca_file"])
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname=host)
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        context = ssl.create_default_context(cafile=stack["ca_file"])
        context.set_alpn_protocols(offered)
        with socket.create_connection((host, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            assert (tls.version(), tls.selected_alpn_protocol()) == ("TLSv1.3", chosen)


def test_the_openai_sdk_verifying_the_generated_ca_works(stack):
    """As the README shows it: the SDK's own httpx client, told to trust stack.json's ca_file."""
    with httpx.Client(verify=ssl.create_default_context(cafile=stack["ca_file"])) as http:
        client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], http_client=http,
                               max_retries=0, timeout=60)
        assert TEST_MODEL in {m.id for m in client.models.list()}
        reply = client.chat.completions.create(model=TEST_MODEL, max_tokens=3,
                                               messages=[{"role": "user", "content": "over TLS"}])
        assert reply.choices[0].message.content


def test_a_client_that_does_not_trust_the_ca_is_refused(stack):
    """The public CAs (certifi's, what the SDK trusts without SSL_CERT_FILE) do not vouch for the local CA."""
    with httpx.Client(verify=ssl.create_default_context(cafile=certifi.where())) as http:
        client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], http_client=http,
                               max_retries=0, timeout=30)
        with pytest.raises(openai.APIConnectionError) as e:
            client.models.list()
    assert isinstance(e.value.__cause__, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(e.value.__cause__)


def test_plain_http_to_the_tls_port_gets_no_http_answer(stack):
    """An API key sent in clear by mistake reaches no HTTP parser: the handshake fails and nothing HTTP comes back
    (at most a TLS alert record)."""
    host, port = _edge(stack)
    request = (f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {stack['api_key']}\r\n"
               "\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(request)
        received = b""
        try:
            while chunk := raw.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in received and b"models" not in received
    assert received == b"" or received[0] == 0x15, received[:40]  # nothing, or an alert


def test_the_admin_api_is_served_over_the_same_tls_listener(stack):
    r = httpx.get(f"{stack['admin_url']}/tenants", headers={"Authorization": f"Bearer {stack['admin_token']}"},
                  verify=ssl.create_default_context(cafile=stack["ca_file"]), timeout=30)
    assert r.status_code == 200 and r.url.scheme == "https"
    assert r.extensions["http_version"] in (b"HTTP/1.1", b"HTTP/2")
