"""Operators of the DSO node: their tokens, roles and permissions, and the audit log that
records every change with who made it (`dso/auth.py` holds the pure rules)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dso.auth import OPERATOR_NAME, Permission, Role, allowed, new_token, token_hash, well_formed
from dso.errors import DsoError, Throttled
from dso.store import Conflict, DsoStore, Operator
from dso.throttle import TokenThrottle


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: an operator and their role (or the node itself)."""

    name: str
    role: str


class Operators:
    """Tokens and operators in `store`; `throttle` counts the invalid tokens per address."""

    def __init__(self, store: DsoStore, throttle: TokenThrottle) -> None:
        self.store = store
        self.throttle = throttle

    def authenticate(self, token: str | None, client: str = "local") -> Actor:
        """The operator holding `token`, sent from the address `client`; 401 when it is
        missing, unknown or revoked, 429 (`Throttled`) once `client` sent too many that were
        not valid lately (see `dso/throttle.py`)."""
        if not token:
            raise DsoError(401, "unauthorized", "send an operator token: Authorization: Bearer …")
        wait = self.throttle.retry_after(client)
        if wait is not None:
            raise Throttled(wait)
        operator = self.store.operator_by_token(token_hash(token)) if well_formed(token) else None
        if operator is None:
            self.throttle.failed(client, "a token this node never issued")
            raise DsoError(401, "unauthorized", "the token is not valid for this DSO node")
        if operator.revoked_at is not None:
            self.throttle.failed(client, f"operator {operator.name}'s revoked token")
            raise DsoError(401, "unauthorized", f"operator {operator.name}'s token was revoked")
        return Actor(operator.name, operator.role)

    @staticmethod
    def require(actor: Actor, permission: Permission) -> None:
        """Refuse (403) an actor whose role does not grant `permission`."""
        if not allowed(actor.role, permission):
            raise DsoError(
                403,
                "forbidden",
                f"operator {actor.name} ({actor.role}) may not {permission.value}: "
                "ask an admin for a role that may",
            )

    def create_operator(self, actor: Actor, name: str, role: str) -> tuple[Operator, str]:
        """A new operator and their token, which is shown this once and stored hashed."""
        if OPERATOR_NAME.fullmatch(name) is None:
            raise DsoError(
                400,
                "bad_request",
                "an operator name is 1-64 of a-z 0-9 . _ -, from a letter or digit",
            )
        try:
            Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise DsoError(400, "bad_request", f"role must be one of {roles}") from None
        token = new_token()
        operator = Operator(name, role, int(time.time()), actor.name, None)
        with self.store.writing() as conn:
            try:
                self.store.add_operator(conn, operator, token_hash(token))
            except Conflict as exc:
                raise DsoError(409, "conflict", str(exc)) from None
            self.store.audit(conn, actor.name, actor.role, "operator.create", name, {"role": role})
        return operator, token

    def revoke_operator(self, actor: Actor, name: str) -> None:
        """Revoke `name`'s token; never the last admin's, or nobody could administer the node."""
        with self.store.writing() as conn:
            admins = self.store.active_admins(conn)
            if admins == [name]:
                raise DsoError(
                    409,
                    "last_admin",
                    f"{name} is the last admin: add another admin before revoking this one",
                )
            if not self.store.revoke_operator(conn, name):
                raise DsoError(404, "not_found", f"no active operator named {name!r}")
            self.store.audit(conn, actor.name, actor.role, "operator.revoke", name, {})

    def audit_entries(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` audit entries after sequence number `after`, as on the wire."""
        return [e.to_wire() for e in self.store.audit_entries(after, limit)]

    def verify_audit(self) -> dict[str, Any]:
        """Whether the audit log's hash chain is intact, and how many entries it holds."""
        count, problem = self.store.verify_audit()
        return {"entries": count, "intact": problem is None, "problem": problem}
