"""Every outbound TLS client verifies by default, takes a private CA, and
refuses TLS below 1.2: each one is pointed at a self-signed loopback server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.metrics import Metrics
from collector.sources.cloud import CloudOrgSettings, CloudOrgSource
from collector.sources.dc_rest import DcRestSettings
from collector.sources.dc_rest import _client as dc_client
from enrichers.scim import ScimEnricher, ScimSettings
from sinks.kafka import KafkaSinkSettings, tls_context
from sinks.splunk_hec import SplunkHecSettings, SplunkHecSink
from sinks.syslog import SyslogSinkSettings, _make_transport
from tests.sink_records import make_event

HEC_OK = b'{"text":"Success","code":0}'


@dataclass(frozen=True, slots=True)
class CertPair:
    """A self-signed certificate for 127.0.0.1 and its key."""

    cert: Path
    key: Path


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    """A fresh self-signed certificate (openssl CLI) valid for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    pair = CertPair(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "2",
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return pair


class TlsServer:
    """Accepts TLS on loopback; answers any HTTP request with 200 and HEC's
    success body, and swallows anything else (syslog frames, Kafka bytes)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.handshakes = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                self.handshakes += 1
                data = conn.recv(65536)
                if data[:4] in (b"GET ", b"POST"):
                    _read_request(conn, data)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(HEC_OK), HEC_OK)
                    )
                else:
                    with contextlib.suppress(OSError):
                        while conn.recv(65536):
                            pass
        except (OSError, ssl.SSLError):
            raw.close()

    def close(self) -> None:
        """Stop accepting."""
        self._listener.close()


def _read_request(conn: ssl.SSLSocket, data: bytes) -> None:
    """Read the rest of an HTTP request, so that answering and closing does not
    reset a client that is still sending its body."""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            return
        body += more


def server_context(pair: CertPair, *, legacy: bool = False) -> ssl.SSLContext:
    """A server context; ``legacy`` offers nothing newer than TLS 1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    if legacy:
        # Python warns that these versions are deprecated: that is the point.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


@pytest.fixture
def modern_server(cert_pair: CertPair) -> Iterator[TlsServer]:
    """A TLS 1.2+ server with the self-signed certificate."""
    server = TlsServer(server_context(cert_pair))
    yield server
    server.close()


@pytest.fixture
def legacy_server(cert_pair: CertPair) -> Iterator[TlsServer]:
    """A server that only speaks TLS 1.0/1.1."""
    server = TlsServer(server_context(cert_pair, legacy=True))
    yield server
    server.close()


Probe = Callable[[int, Path | None], Awaitable[None]]


async def probe_dc_rest(port: int, ca_file: Path | None) -> None:
    """One request through the DC REST source's client."""
    settings = DcRestSettings.model_validate(
        {
            "kind": "dc_rest",
            "name": "dc",
            "base_url": f"https://127.0.0.1:{port}",
            "auth": {"token": "t"},
            "ca_file": ca_file,
        }
    )
    async with dc_client(settings, None) as client:
        (await client.get("/rest/auditing/1.0/events")).raise_for_status()


async def probe_cloud(port: int, ca_file: Path | None) -> None:
    """One request through the Cloud source's client."""
    settings = CloudOrgSettings.model_validate(
        {
            "kind": "cloud_org",
            "name": "cloud",
            "org_id": "org",
            "api_key": "k",
            "base_url": f"https://127.0.0.1:{port}",
            "ca_file": ca_file,
        }
    )
    source = CloudOrgSource(settings, metrics=Metrics())
    try:
        (
            await source._client.get("/admin/v1/orgs/org/events-stream")
        ).raise_for_status()
    finally:
        await source.aclose()


async def probe_scim(port: int, ca_file: Path | None) -> None:
    """One request through the SCIM enricher's client."""
    settings = ScimSettings.model_validate(
        {
            "kind": "identity_scim",
            "name": "scim",
            "url": f"https://127.0.0.1:{port}/scim/v2",
            "token": "t",
            "ca_file": ca_file,
        }
    )
    async with ScimEnricher(settings, Metrics())._make_client() as client:
        (await client.get("Users")).raise_for_status()


async def probe_hec(port: int, ca_file: Path | None) -> None:
    """One batch through the Splunk HEC sink."""
    settings = SplunkHecSettings.model_validate(
        {
            "kind": "splunk_hec",
            "name": "hec",
            "url": f"https://127.0.0.1:{port}",
            "token": "t",
            "ca_file": str(ca_file) if ca_file else None,
            "timeout": "3s",
        }
    )
    sink = SplunkHecSink(settings)
    try:
        await sink.start()
        await sink.send([make_event(1)])
    finally:
        await sink.aclose()


async def probe_syslog(port: int, ca_file: Path | None) -> None:
    """One frame through the syslog sink's TLS transport (and a handshake wait)."""
    settings = SyslogSinkSettings.model_validate(
        {
            "kind": "syslog",
            "name": "syslog",
            "host": "127.0.0.1",
            "port": port,
            "transport": "tls",
            "ca_file": str(ca_file) if ca_file else None,
            "timeout": "3s",
        }
    )
    transport = _make_transport("syslog", settings)
    try:
        await transport.send([b"<134>1 - - - - - - hello"])
    finally:
        await transport.aclose()


async def probe_kafka(port: int, ca_file: Path | None) -> None:
    """A handshake with the context the Kafka sink gives aiokafka."""
    settings = KafkaSinkSettings.model_validate(
        {
            "kind": "kafka",
            "name": "kafka",
            "bootstrap_servers": [f"127.0.0.1:{port}"],
            "tls": True,
            "ca_file": ca_file,
            "compression": "gzip",
        }
    )
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=tls_context(settings), server_hostname="127.0.0.1"
        ),
        5,
    )
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


PROBES: dict[str, Probe] = {
    "dc_rest": probe_dc_rest,
    "cloud_org": probe_cloud,
    "identity_scim": probe_scim,
    "splunk_hec": probe_hec,
    "syslog_tls": probe_syslog,
    "kafka_tls": probe_kafka,
}


def is_tls_failure(exc: BaseException) -> bool:
    """Whether an ``ssl.SSLError`` (or its message) is anywhere in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, ssl.SSLError) or "certificate" in text or "ssl" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@pytest.mark.parametrize("client", sorted(PROBES))
async def test_self_signed_server_refused_without_ca(
    client: str, modern_server: TlsServer
) -> None:
    """With default settings the client refuses a certificate it cannot verify."""
    with pytest.raises(Exception) as caught:
        await PROBES[client](modern_server.port, None)

    assert is_tls_failure(caught.value), repr(caught.value)


@pytest.mark.parametrize("client", sorted(PROBES))
async def test_self_signed_server_accepted_with_ca_file(
    client: str, modern_server: TlsServer, cert_pair: CertPair
) -> None:
    """The same server is accepted once its certificate is given as ``ca_file``."""
    await PROBES[client](modern_server.port, cert_pair.cert)

    assert modern_server.handshakes >= 1


@pytest.mark.parametrize("client", sorted(PROBES))
async def test_tls_below_1_2_refused(
    client: str, legacy_server: TlsServer, cert_pair: CertPair
) -> None:
    """A server offering only TLS 1.0/1.1 is refused even with a trusted CA."""
    with pytest.raises(Exception) as caught:
        await PROBES[client](legacy_server.port, cert_pair.cert)

    assert is_tls_failure(caught.value), repr(caught.value)
    assert legacy_server.handshakes == 0


def test_client_contexts_set_tls_1_2_minimum(cert_pair: CertPair) -> None:
    """The contexts built by the shared helpers pin TLS 1.2 as the floor."""
    from collector.sources.http_common import _ssl_context
    from sinks.syslog_transport import make_tls_context

    contexts = [
        _ssl_context(True, None),
        _ssl_context(True, cert_pair.cert),
        make_tls_context(
            verify=True, ca_file=str(cert_pair.cert), client_cert=None, client_key=None
        ),
        tls_context(
            KafkaSinkSettings.model_validate(
                {"kind": "kafka", "name": "k", "bootstrap_servers": ["x:1"],
                 "tls": True, "compression": "gzip"}
            )
        ),
    ]  # fmt: skip

    for context in contexts:
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname


async def test_legacy_server_really_speaks_tls_1_1(
    legacy_server: TlsServer, cert_pair: CertPair
) -> None:
    """Control: a client that allows TLS 1.1 completes the handshake, so the
    refusals above come from the clients' floor, not from a broken server."""
    context = ssl.create_default_context(cafile=str(cert_pair.cert))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")

    _, writer = await asyncio.open_connection(
        "127.0.0.1", legacy_server.port, ssl=context, server_hostname="127.0.0.1"
    )
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()

    assert version == "TLSv1.1"
