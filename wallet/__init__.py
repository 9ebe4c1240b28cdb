"""The prosumer wallet: an encrypted keystore of its keys and state, and its commands.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from wallet.agent import AgentError as AgentError
    from wallet.agent import held_key as held_key
    from wallet.agent import lock_agent as lock_agent
    from wallet.agent import start_agent as start_agent
    from wallet.autopilot import JOURNAL_KIND as JOURNAL_KIND
    from wallet.autopilot import Autopilot as Autopilot
    from wallet.autopilot import Cover as Cover
    from wallet.autopilot import Settings as Settings
    from wallet.autopilot import Step as Step
    from wallet.autopilot import Strategy as Strategy
    from wallet.autopilot import WalletOperations as WalletOperations
    from wallet.autopilot import affordable_w as affordable_w
    from wallet.autopilot import forecast_w as forecast_w
    from wallet.keystore import Contents as Contents
    from wallet.keystore import KdfLevel as KdfLevel
    from wallet.keystore import KeystoreError as KeystoreError
    from wallet.keystore import WalletFile as WalletFile
    from wallet.market import accept as accept
    from wallet.market import connect as connect
    from wallet.market import place_order as place_order
    from wallet.market import proposals as proposals
    from wallet.market import store_error as store_error
    from wallet.market import take as take
    from wallet.market import trade_effects as trade_effects
    from wallet.mixing import SPLIT_ORIGIN as SPLIT_ORIGIN
    from wallet.mixing import mix as mix
    from wallet.wallet import Coin as Coin
    from wallet.wallet import Services as Services
    from wallet.wallet import Wallet as Wallet
    from wallet.wallet import WalletError as WalletError
    from wallet.wallet import asset_text as asset_text
    from wallet.wallet import new_data as new_data
    from wallet.wallet import parse_amounts as parse_amounts

__all__, __getattr__ = lazy_door(__name__, __file__)
