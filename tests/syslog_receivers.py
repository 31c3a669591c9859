"""rsyslog as a real syslog receiver for the sink tests, plus a test PKI.

``rsyslog`` (fixture) starts ``rsyslogd -n`` with a config of ours on free
loopback ports: UDP, plain TCP and TLS (ossl driver, anonymous client auth)
TCP, where rsyslog detects octet-counted framing on its own, and RELP (imrelp)
plain and over TLS (librelp with OpenSSL, server certificate only). Two more
listeners require a client certificate signed by the test CA (mutual TLS):
``mtls_port`` (imtcp, ossl, ``x509/certvalid``) and ``relp_mtls_port`` (imrelp,
``tls.authMode="certvalid"``). Each
received message is written twice: raw (``%rawmsg%``, one per line) and as
rsyslog parsed it (``APP-NAME MSGID STRUCTURED-DATA``), so tests can count
lines and check that rsyslog read our messages as RFC 5424.
``stop()``/``start()`` stop rsyslogd gracefully (SIGTERM: it writes out what it
read) and start it again on the same ports, for outage tests. The PKI (``pki``,
one per session) is made with the ``openssl`` CLI: a CA, a server certificate
for ``localhost`` and 127.0.0.1, a client certificate signed by the CA, and a
second, unrelated CA with a client certificate of its own. Needs
tests/infra/install_rsyslog.sh.

Import the fixtures into a test module: ``from tests.syslog_receivers import
pki, rsyslog``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from sinks.syslog import SyslogSinkSettings

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
_LEAF_EXT = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid\n"
)
_SERVER_EXT = (
    _LEAF_EXT
    + "extendedKeyUsage=serverAuth\n"
    + "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
)
_CLIENT_EXT = _LEAF_EXT + "extendedKeyUsage=clientAuth\n"
_CONFIG = """\
global(workDirectory="{work}" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp" maxSessions="200")
module(load="imrelp" tls.tlslib="openssl")
template(name="raw" type="string" string="%rawmsg%\\n")
template(name="parsed" type="string"
         string="%app-name% %msgid% %structured-data%\\n")
ruleset(name="main") {{
  if $app-name == "probe" then {{
    action(type="omfile" file="{probe}" template="raw")
    stop
  }}
  action(type="omfile" file="{raw}" template="raw")
  action(type="omfile" file="{parsed}" template="parsed")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="main")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="main")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="main"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imrelp" address="127.0.0.1" port="{relp}" ruleset="main")
input(type="imrelp" address="127.0.0.1" port="{relp_tls}" ruleset="main"
      tls="on" tls.cacert="{ca}" tls.mycert="{cert}" tls.myprivkey="{key}")
input(type="imtcp" address="127.0.0.1" port="{mtls}" ruleset="main"
      streamDriver.name="ossl" streamDriver.mode="1"
      streamDriver.authMode="x509/certvalid"
      streamDriver.permitExpiredCerts="off"
      streamDriver.CAFile="{ca}" streamDriver.CertFile="{cert}"
      streamDriver.KeyFile="{key}")
input(type="imrelp" address="127.0.0.1" port="{relp_mtls}" ruleset="main"
      tls="on" tls.authMode="certvalid" tls.cacert="{ca}" tls.mycert="{cert}"
      tls.myprivkey="{key}")
"""


@dataclass(frozen=True, slots=True)
class Pki:
    """Files of the test PKI.

    ``cert``/``key`` are the server's; ``client_cert``/``client_key`` a client
    certificate signed by ``ca``; ``other_client_cert``/``other_client_key`` a
    client certificate signed by the unrelated ``other_ca``.
    """

    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path


@dataclass(slots=True)
class Rsyslog:
    """A running rsyslogd and where it writes what it received."""

    udp_port: int
    tcp_port: int
    tls_port: int
    relp_port: int
    relp_tls_port: int
    mtls_port: int
    relp_mtls_port: int
    raw_file: Path
    parsed_file: Path
    pki: Pki
    work: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _output: IO[bytes] | None = field(default=None, repr=False)

    def lines(self) -> list[str]:
        """Raw messages received so far, one per line."""
        return _read_lines(self.raw_file)

    def parsed(self) -> list[str]:
        """``APP-NAME MSGID STRUCTURED-DATA`` of each message received so far."""
        return _read_lines(self.parsed_file)

    async def wait_for(self, count: int, within: float = 10.0) -> list[str]:
        """Wait until at least ``count`` messages arrived; return all of them."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            lines = self.lines()
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.05)
        return self.lines()

    def start(self) -> None:
        """Start rsyslogd (on the same ports after a ``stop``); wait until ready."""
        if self._process is not None:
            return
        self._output = (self.work / "rsyslogd.out").open("ab")
        self._process = subprocess.Popen(
            [
                RSYSLOGD,
                "-n",
                "-f",
                str(self.work / "rsyslog.conf"),
                "-i",
                str(self.work / "rsyslogd.pid"),
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        _wait_ready(self, self._process, self.work)

    def stop(self) -> None:
        """Stop rsyslogd gracefully (SIGTERM; killed after 10 s). Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._output is not None:
            self._output.close()
            self._output = None


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl not installed: run tests/infra/install_rsyslog.sh")
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(folder: Path) -> Pki:
    """The test PKI made in ``folder`` (for callers outside pytest, e.g. bench)."""
    _make_ca(folder, "ca")
    _make_ca(folder, "other")
    _make_leaf(folder, "server", "ca", "localhost", _SERVER_EXT)
    _make_leaf(folder, "client", "ca", "bbaudit client", _CLIENT_EXT)
    _make_leaf(folder, "other-client", "other", "bbaudit client", _CLIENT_EXT)

    return Pki(
        ca=folder / "ca.pem",
        cert=folder / "server.pem",
        key=folder / "server.key",
        other_ca=folder / "other.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_client_cert=folder / "other-client.pem",
        other_client_key=folder / "other-client.key",
    )


@pytest.fixture
def rsyslog(tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    """rsyslogd listening on free loopback ports, stopped after the test."""
    if not Path(RSYSLOGD).exists():
        pytest.fail("rsyslogd not installed: run tests/infra/install_rsyslog.sh")
    work = tmp_path / "rsyslog"
    work.mkdir()
    receiver = configure_rsyslog(work, pki)
    try:
        receiver.start()
        yield receiver
    finally:
        receiver.stop()


def configure_rsyslog(work: Path, pki: Pki) -> Rsyslog:
    """An rsyslogd on free loopback ports, configured in ``work``; not started.

    For callers outside pytest (e.g. bench): ``start()``, then ``stop()``.
    """
    udp, tcp, tls = _free_port(socket.SOCK_DGRAM), _free_port(), _free_port()
    relp, relp_tls = _free_port(), _free_port()
    mtls, relp_mtls = _free_port(), _free_port()
    receiver = Rsyslog(
        udp_port=udp,
        tcp_port=tcp,
        tls_port=tls,
        relp_port=relp,
        relp_tls_port=relp_tls,
        mtls_port=mtls,
        relp_mtls_port=relp_mtls,
        raw_file=work / "raw.log",
        parsed_file=work / "parsed.log",
        pki=pki,
        work=work,
    )
    (work / "rsyslog.conf").write_text(
        _CONFIG.format(
            work=work,
            ca=pki.ca,
            cert=pki.cert,
            key=pki.key,
            probe=work / "probe.log",
            raw=receiver.raw_file,
            parsed=receiver.parsed_file,
            udp=udp,
            tcp=tcp,
            tls=tls,
            relp=relp,
            relp_tls=relp_tls,
            mtls=mtls,
            relp_mtls=relp_mtls,
        )
    )
    return receiver


def loopback_settings(
    port: int, transport: str, **overrides: Any
) -> SyslogSinkSettings:
    """Syslog sink settings to 127.0.0.1:``port``: raw format, 5 s timeout."""
    values: dict[str, Any] = {
        "kind": "syslog",
        "name": "syslog",
        "host": "127.0.0.1",
        "port": port,
        "transport": transport,
        "hostname": "bb-test",
        "timeout": 5,
        "format": "raw",
    }
    values.update(overrides)
    return SyslogSinkSettings(**values)


def _wait_ready(
    receiver: Rsyslog, process: subprocess.Popen[bytes], work: Path
) -> None:
    """Wait for the TCP listeners, then for a UDP probe to be written out."""
    deadline = time.monotonic() + 15
    probe_file = work / "probe.log"
    # After a restart the file holds earlier probes: wait for it to grow.
    seen = probe_file.stat().st_size if probe_file.exists() else 0
    probe = b"<14>1 - - probe - - - ready"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (work / "rsyslogd.out").read_text(errors="replace")
            pytest.fail(f"rsyslogd exited with {process.returncode}: {output}")
        ports = (
            receiver.tcp_port,
            receiver.tls_port,
            receiver.relp_port,
            receiver.relp_tls_port,
            receiver.mtls_port,
            receiver.relp_mtls_port,
        )
        if all(_accepts(port) for port in ports):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(probe, ("127.0.0.1", receiver.udp_port))
            if probe_file.exists() and probe_file.stat().st_size > seen:
                return
        time.sleep(0.05)
    pytest.fail("rsyslogd did not start listening within 15 s")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    # Split on LF only: str.splitlines() would also split on U+2028 and friends,
    # which are ordinary characters to syslog.
    data = path.read_bytes().decode("utf-8", "replace")
    return data.split("\n")[:-1] if data else []


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=bbaudit test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


def _make_leaf(folder: Path, name: str, ca: str, common_name: str, ext: str) -> None:
    """``name``.pem/.key: a P-256 certificate for ``common_name`` signed by ``ca``."""
    (folder / f"{name}.ext").write_text(ext)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
        "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip
