"""Operators, their roles and their API tokens.

A token is `pdso_` and 43 characters of URL-safe base64 (256 random bits). It is shown once, when
it is made; the database keeps only its SHA-256, which is enough for a secret that cannot be
guessed (a slow password hash protects low-entropy passwords, not random keys), and lets the node
find the operator by the hash alone.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
import secrets

TOKEN_PREFIX = "pdso_"
OPERATOR_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOKEN = re.compile(r"pdso_[A-Za-z0-9_-]{43}")


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"


class Permission(enum.StrEnum):
    READ = "read"  # meters, schedule, regulations, bills, statements, forecast
    REGULATE = "regulate"  # authorize, ban, tariffs, limits, accept proposals, controller
    RECONCILE = "reconcile"  # re-run bill reconciliation
    AUDIT = "audit"  # read and verify the audit log
    OPERATORS = "operators"  # create and revoke operators


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset({Permission.READ, Permission.REGULATE, Permission.RECONCILE}),
    Role.AUDITOR: frozenset({Permission.READ, Permission.AUDIT}),
}


def new_token() -> str:
    """A fresh operator token (256 random bits)."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_hash(token: str) -> bytes:
    """What the database stores for `token`."""
    return hashlib.sha256(token.encode()).digest()


def well_formed(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def allowed(role: str, permission: Permission) -> bool:
    try:
        return permission in GRANTS[Role(role)]
    except ValueError:
        return False
