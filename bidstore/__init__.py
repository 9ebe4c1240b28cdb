"""The bid store: asks and bids with ownership proofs, the order book and its matching.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from bidstore.api import create_app as create_app
    from bidstore.book import Book as Book
    from bidstore.book import check_proposal as check_proposal
    from bidstore.book import leftovers as leftovers
    from bidstore.book import trade_terms as trade_terms
    from bidstore.client import BidStoreClient as BidStoreClient
    from bidstore.client import BidStoreClientError as BidStoreClientError
    from bidstore.limits import Limits as Limits
    from bidstore.orders import JOULES_PER_KWH as JOULES_PER_KWH
    from bidstore.orders import MAX_FA_INPUTS as MAX_FA_INPUTS
    from bidstore.orders import MAX_PRICE as MAX_PRICE
    from bidstore.orders import MIN_PRICE as MIN_PRICE
    from bidstore.orders import RELAY as RELAY
    from bidstore.orders import Challenges as Challenges
    from bidstore.orders import Listing as Listing
    from bidstore.orders import Order as Order
    from bidstore.orders import OrderSide as OrderSide
    from bidstore.orders import check_order as check_order
    from bidstore.orders import decode_order as decode_order
    from bidstore.orders import encode_order as encode_order
    from bidstore.orders import order_id as order_id
    from bidstore.orders import payment as payment
    from bidstore.orders import sign_order as sign_order
    from bidstore.service import BidStore as BidStore

__all__, __getattr__ = lazy_door(__name__, __file__)
