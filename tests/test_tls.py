"""TLS (``https://``, ``grpcs://``) against the local server behind a TLS-terminating proxy, with a CA and
certificates that these tests make (the ``cryptography`` package): the right CA works on every client and
both protocols, a wrong or missing CA fails fast with ServerUnavailableError, and mutual TLS works with a
client certificate and fails without one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import pathlib
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from Xclient.exceptions import ServerUnavailableError

from .drivers import STREAMING, Driver, every_client

#: A failure must come long before a hang would show, and well within the init deadline plus a margin.
INIT_TIMEOUT_S = 5.0

# -- certificates ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a
    second CA that signed neither."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    wrong_ca: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: tuple[str, object] | None, extensions: list) -> x509.Certificate:
    """A certificate valid for a day; self-signed when ``issuer`` (name, key) is None."""
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: pathlib.Path, stem: str, key, certificate: x509.Certificate) -> tuple[str, str]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def make_pki(directory: pathlib.Path) -> Pki:
    ca_usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    paths = {}
    cas = {}
    for stem in ("ca", "wrong_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        ca_extensions = [(x509.BasicConstraints(ca=True, path_length=None), True), (ca_usage, True)]
        cas[stem] = key
        paths[stem], _ = _write(directory, stem, key, _certificate(f"Xclient test {stem}", key, None, ca_extensions))
    leaf = [(x509.BasicConstraints(ca=False, path_length=None), True)]
    server_names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    for stem, usage, extra in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [(server_names, False)]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        extensions = [*leaf, (x509.ExtendedKeyUsage([usage]), False), *extra]
        certificate = _certificate(stem, key, ("Xclient test ca", cas["ca"]), extensions)
        paths[f"{stem}_cert"], paths[f"{stem}_key"] = _write(directory, stem, key, certificate)
    return Pki(**paths)


# -- a TLS-terminating proxy in front of the local server ---------------------------------------------


class TlsProxy:
    """Accepts TLS on 127.0.0.1 (ALPN h2 for gRPC, http/1.1 for HTTP) and pipes the plain bytes to a port
    of the local server. Runs an event loop in a thread of its own."""

    def __init__(self, target_port: int, context: ssl.SSLContext) -> None:
        self._target_port = target_port
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-tls-proxy", daemon=True)
        self._thread.start()
        self._started.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        start = asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context)
        self._server = self._loop.run_until_complete(start)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def server_context(pki: Pki, *, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["h2", "http/1.1"])  # gRPC insists on h2 by ALPN
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


@dataclasses.dataclass(frozen=True)
class TlsUrls:
    tls: dict[str, str]  # protocol -> https:// or grpcs:// URL of a proxy
    mutual: dict[str, str]  # the same, behind proxies that require a client certificate
    pki: Pki


@pytest.fixture(scope="module")
def tls(triton_server, tmp_path_factory) -> Iterator[TlsUrls]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    ports = {"http": triton_server.http_port, "grpc": triton_server.grpc_port}
    scheme = {"http": "https", "grpc": "grpcs"}
    proxies: dict[tuple[str, bool], TlsProxy] = {
        (protocol, mutual): TlsProxy(port, server_context(pki, require_client_cert=mutual))
        for protocol, port in ports.items()
        for mutual in (False, True)
    }
    urls = {
        mutual: {protocol: f"{scheme[protocol]}://127.0.0.1:{proxies[protocol, mutual].port}" for protocol in ports}
        for mutual in (False, True)
    }
    yield TlsUrls(tls=urls[False], mutual=urls[True], pki=pki)
    for proxy in proxies.values():
        proxy.close()


def check(kind: str, url: str, **options: object) -> None:
    """One request through the client; raises what the client raised."""
    driver = Driver(kind, url, "text_stream" if kind in STREAMING else "text", init_timeout_s=INIT_TIMEOUT_S, **options)
    try:
        outputs = driver.infer("安全")
        key = "text_output" if kind in STREAMING else "UPPER"
        assert b"".join(out[key][0] for out in outputs).decode() == "安全"
    finally:
        driver.close()


# -- tests -------------------------------------------------------------------------------------------


@every_client
def test_the_right_ca_works_on_every_client_and_both_protocols(tls, kind, protocol):
    check(kind, tls.tls[protocol], ca_certs=tls.pki.ca)


@every_client
@pytest.mark.parametrize("ca", ["wrong", "missing"])
def test_a_wrong_or_missing_ca_fails_fast_with_server_unavailable(tls, kind, protocol, ca):
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as info:
        check(kind, tls.tls[protocol], ca_certs=tls.pki.wrong_ca if ca == "wrong" else None)
    assert time.monotonic() - started < INIT_TIMEOUT_S + 10  # an error, not a hang
    assert "certificate" in str(info.value).lower()
    assert not info.value.retryable  # sending it again cannot fix a certificate


@every_client
def test_mutual_tls_works_with_a_client_certificate_and_fails_without(tls, kind, protocol):
    url = tls.mutual[protocol]
    check(kind, url, ca_certs=tls.pki.ca, client_cert=tls.pki.client_cert, client_key=tls.pki.client_key)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as info:
        check(kind, url, ca_certs=tls.pki.ca)  # the proxy refuses the handshake
    assert time.monotonic() - started < INIT_TIMEOUT_S + 10
    if protocol == "grpc":  # gRPC only says "Socket closed": the error points at the likely cause
        assert "client_cert" in str(info.value)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_plain_text_client_at_a_tls_port_fails_fast_with_server_unavailable(tls, protocol):
    plain = tls.tls[protocol].replace("s://", "://", 1)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError):
        check("ModelClient", plain)
    assert time.monotonic() - started < INIT_TIMEOUT_S + 10
