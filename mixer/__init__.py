"""The mixer: CoinShuffle with blame (protocol.py), its coordinator (coordinator.py, served by
api.py, its long polls awaited in polls.py, its request schemas in schemas.py) and its client
(client.py, over one keep-alive connection: transport.py); what a peer signs for the
coordinator is auth.py's.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from mixer.api import create_app as create_app
    from mixer.client import DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S
    from mixer.client import Forming as Forming
    from mixer.client import MixClient as MixClient
    from mixer.client import MixError as MixError
    from mixer.client import MixResult as MixResult
    from mixer.client import PoolsClient as PoolsClient
    from mixer.coordinator import Coordinator as Coordinator
    from mixer.protocol import Done as Done
    from mixer.protocol import Input as Input
    from mixer.protocol import Kind as Kind
    from mixer.protocol import Message as Message
    from mixer.protocol import Peer as Peer
    from mixer.protocol import Session as Session

__all__, __getattr__ = lazy_door(__name__, __file__)
