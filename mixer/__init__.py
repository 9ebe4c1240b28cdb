"""The mixer: CoinShuffle with blame (protocol.py), its coordinator and its client."""
