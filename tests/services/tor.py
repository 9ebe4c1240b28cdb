"""A private Tor network on loopback for the session: 3 authorities, 3 relays and a client.

Use it with `from services.tor import tor_network_fixture  # noqa: F401` and a
`tor_network: TorNetwork` argument: the client has bootstrapped, `tor_network.socks_port`
reaches onion services through `socks5://127.0.0.1:PORT` and `tor_network.control_port`
publishes them (`bidstore.onion.publish_onion`). Bootstrap takes 20-60 s, once a session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulation.tornet import TorNetwork, TorNetworkError, tor_executables


@pytest.fixture(scope="session", name="tor_network")
def tor_network_fixture() -> Iterator[TorNetwork]:
    """A bootstrapped private Tor network, stopped at the end of the session."""
    if tor_executables() is None:
        pytest.skip(
            "tor and tor-gencert not installed: run `make system-deps` (Debian's tor package)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="petra-tor-"))
    network = TorNetwork(workdir)
    try:
        network.up()
    except TorNetworkError as error:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the private Tor network did not bootstrap: {error}")
    try:
        yield network
    finally:
        network.down()
        shutil.rmtree(workdir, ignore_errors=True)
