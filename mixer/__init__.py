"""The mixer: CoinShuffle with blame (protocol.py), its coordinator (coordinator.py, served by
api.py, its long polls awaited in polls.py, its request schemas in schemas.py) and its client
(client.py); what a peer signs for the coordinator is auth.py's."""
