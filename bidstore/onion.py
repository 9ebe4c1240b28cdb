"""The bid store's Tor onion service (`petra bidstore serve --onion`): published through a
running tor's control port with stem, on the public Tor network or the private one of
`simulation.tornet` alike."""

from __future__ import annotations

from stem.control import Controller  # type: ignore[import-untyped]

HOST = "127.0.0.1"
PUBLISH_TIMEOUT_S = 120.0


def open_controller(control_port: int) -> Controller:
    """A stem controller of the tor at 127.0.0.1:`control_port`, authenticated (close it, or
    use it in `with`)."""
    controller = Controller.from_port(address=HOST, port=control_port)
    try:
        controller.authenticate()  # the cookie, found through PROTOCOLINFO
    except BaseException:
        controller.close()
        raise
    return controller


def publish_onion(
    control_port: int,
    target_port: int,
    key: str | None = None,
    timeout_s: float = PUBLISH_TIMEOUT_S,
    max_streams: int | None = None,
) -> tuple[str, str]:
    """Publish an onion service on port 80 that forwards to 127.0.0.1:`target_port`, through
    the tor whose control port is `control_port`; return once its descriptor is uploaded.

    `key` is an ED25519-V3 private key as a previous call returned it, to keep the same
    address; without one Tor makes a new key. `max_streams` bounds the streams open at once on
    one rendezvous circuit (ADD_ONION MaxStreams; Tor closes a circuit asking for more); None
    or 0: no bound. Returns (address ending in ".onion", key). The service lives as long as
    that tor runs (it is detached from this control connection).
    """
    with open_controller(control_port) as control:
        if key is None:
            key_type, key_content = "NEW", "ED25519-V3"
        else:
            key_type, key_content = "ED25519-V3", key
        service = control.create_ephemeral_hidden_service(
            {80: f"{HOST}:{target_port}"},
            key_type=key_type,
            key_content=key_content,
            detached=True,
            await_publication=True,
            timeout=timeout_s,
            max_streams=max_streams,
        )
    private_key: str = service.private_key if key is None else key
    return f"{service.service_id}.onion", private_key
