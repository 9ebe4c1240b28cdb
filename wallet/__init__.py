"""The prosumer wallet: an encrypted keystore of its keys and state, and its commands."""
