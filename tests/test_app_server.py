"""The served app stays on this machine: .streamlit/config.toml binds the loopback interface and
Streamlit contacts no outside address at start (no internal / external IP lookup); the documented
override serves to the network.

The server runs with socket.connect and socket.getaddrinfo wrapped: any connection attempt (TCP
or UDP) to, or name lookup of, anything but the loopback is printed to its log and refused, so
nothing leaves the machine even in the control test that runs Streamlit without the config.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app_browser import free_port  # noqa: E402

pytestmark = pytest.mark.timeout(180)

SERVER = """
import socket, sys
LOCAL = ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "", None)
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if host not in LOCAL:
        print(f"OUTSIDE-CONNECT {address!r}", file=sys.stderr, flush=True)
        raise OSError("blocked by the test: no outside connections")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host not in LOCAL:
        print(f"OUTSIDE-LOOKUP {host!r}", file=sys.stderr, flush=True)
        raise socket.gaierror("blocked by the test: no outside name lookups")
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
sys.argv = ["streamlit", "run", sys.argv[1], *sys.argv[2:]]
from streamlit.web.cli import main
main()
"""


def listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) that listen on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def serve(*options: str, cwd: Path = ROOT) -> tuple[set[str], str]:
    """Start the app with ``options`` (config from ``cwd``/.streamlit), load its page once, stop it;
    the listening addresses and the log."""
    port = free_port()
    app = str(ROOT / "app" / "serve.py")  # the README's command (app/Home.py, served once warmed up)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, app, "--server.port", str(port), "--server.fileWatcherType", "none", *options],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
        addresses = listening(port)
    finally:
        process.terminate()
        log, _ = process.communicate(timeout=30)
    return addresses, log


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 in /proc/net notation


def test_default_config_listens_on_loopback_only_and_contacts_nothing_outside():
    addresses, log = serve()
    assert addresses and addresses <= LOOPBACK, addresses
    assert "OUTSIDE-" not in log, log
    assert "Network URL" not in log and "External URL" not in log
    assert "URL: http://localhost:" in log


def test_the_documented_override_serves_to_the_network():
    addresses, log = serve("--server.address", "0.0.0.0")
    assert "00000000" in addresses, addresses  # every IPv4 interface
    assert "OUTSIDE-" not in log, log


def test_without_the_config_streamlit_would_listen_everywhere_and_look_outside(tmp_path):
    """The control: the wrapper does see the lookups (and the binding) that the config switches off."""
    addresses, log = serve("--server.headless", "true", "--browser.gatherUsageStats", "false", cwd=tmp_path)
    assert not addresses <= LOOPBACK, addresses
    assert "OUTSIDE-CONNECT ('8.8.8.8', 1)" in log, log
