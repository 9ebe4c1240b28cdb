"""Who is looking: the monitoring service's users (member, manager, operator), their
passwords (Argon2id), sessions held in a cookie whose token only the server's hash knows,
CSRF tokens, and the limits on guessing passwords (DESIGN.md section 13).

The routes find the `MonitorService` at `request.app.state.monitor` (set by `create_app`).
`viewer` is a FastAPI dependency: it answers 401 (`unauthorized`) without a valid session; a
page route (`templating.PageRoute`) turns that 401 into a redirect to the login page.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from sqlalchemy import delete, select, update

from monitoring.service import MonitorService
from monitoring.store import MonitoringStore, community, member, session, user
from service import ApiError

ROLES = ("member", "manager", "operator")
SESSION_COOKIE = "petra_session"
SESSION_S = 12 * 3_600
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1_024  # Argon2 takes any length; a megabyte of password is an attack
MAX_FAILURES = 5  # failed logins in a row before the user is locked
LOCK_S = 15 * 60
ADDRESS_TRIES_PER_MINUTE = 20
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, t=3, 64 MiB, p=4 (RFC 9106)


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request; `csrf` is their session's CSRF token."""

    user_id: int
    username: str
    role: str
    community_id: str | None
    member_id: int | None
    csrf: str


class LoginRefused(Exception):
    """A login that did not sign anyone in: `code` is stable, `retry_after_s` is set when
    waiting will help."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


def monitor(request: Request) -> MonitorService:
    """The service of the application serving `request` (`app.state.monitor`)."""
    found = getattr(request.app.state, "monitor", None)
    if not isinstance(found, MonitorService):
        raise RuntimeError("the monitoring app has no state.monitor: build it with create_app")
    return found


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a session token or API key is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- users


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has at most {MAX_PASSWORD_CHARS} characters")
    return password


def create_user(
    store: MonitoringStore,
    username: str,
    password: str,
    role: str,
    *,
    community_id: str | None = None,
    member_id: int | None = None,
    now: float | None = None,
) -> int:
    """Create a user and return its id. A member user names the member whose data they see
    (their community follows from it); a manager names the community they manage; an operator
    sees every community. ValueError says what is wrong."""
    if not USERNAME.fullmatch(username or ""):
        raise ValueError("a username is 1 to 64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise ValueError(f"a user's role is one of {', '.join(ROLES)}, not {role!r}")
    hashed = _hasher.hash(_check_password(password))
    with store.engine.begin() as conn:
        if conn.scalar(select(user.c.id).where(user.c.username == username)) is not None:
            raise ValueError(f"there is already a user {username!r}")
        if role == "member":
            if member_id is None:
                raise ValueError("a member user must name the member whose data they see")
            owner: str | None = conn.scalar(
                select(member.c.community_id).where(member.c.id == member_id)
            )
            if owner is None:
                raise ValueError(f"there is no member {member_id}")
            if community_id is not None and community_id != owner:
                raise ValueError(f"member {member_id} is not in community {community_id!r}")
            community_id = owner
        elif role == "manager":
            if community_id is None:
                raise ValueError("a manager must name the community they manage")
            if conn.scalar(select(community.c.id).where(community.c.id == community_id)) is None:
                raise ValueError(f"there is no community {community_id!r}")
            member_id = None
        else:
            community_id = member_id = None
        created = conn.execute(
            user.insert().values(
                username=username,
                role=role,
                community_id=community_id,
                member_id=member_id,
                password_hash=hashed,
                failed_logins=0,
                locked_until=0,
                disabled=False,
                created=int(time.time() if now is None else now),
            )
        )
        key = created.inserted_primary_key
        assert key is not None  # an insert of one row always has its key
        return int(key[0])


def set_password(
    store: MonitoringStore, username: str, password: str, *, keep_session: str | None = None
) -> None:
    """Give `username` a new password and end their sessions, all but `keep_session` (the
    cookie token of the session that changed it), and unlock them."""
    hashed = _hasher.hash(_check_password(password))
    with store.engine.begin() as conn:
        user_id = conn.scalar(select(user.c.id).where(user.c.username == username))
        if user_id is None:
            raise ValueError(f"there is no user {username!r}")
        conn.execute(
            update(user)
            .where(user.c.id == user_id)
            .values(password_hash=hashed, failed_logins=0, locked_until=0)
        )
        ended = delete(session).where(session.c.user_id == user_id)
        if keep_session is not None:
            ended = ended.where(session.c.token_hash != token_hash(keep_session))
        conn.execute(ended)


def list_users(store: MonitoringStore) -> list[dict[str, Any]]:
    """Every user without their password hash: id, username, role, community_id, member_id,
    failed_logins, locked_until (unix s), disabled, created (unix s)."""
    shown = [c for c in user.c if c.name != "password_hash"]
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(*shown).order_by(user.c.username))]


# ---------------------------------------------------------------- logging in


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass
class AddressLimiter:
    """At most `per_minute` login attempts from one address in any 60 seconds (in memory:
    a restart forgets, the per-user lock in the store does not)."""

    per_minute: int = ADDRESS_TRIES_PER_MINUTE
    _tries: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, address: str, now: float) -> int:
        """0 and the attempt counted, or the whole seconds to wait before `address` may try."""
        with self._lock:
            tries = self._tries.setdefault(address, deque())
            while tries and tries[0] <= now - 60:
                tries.popleft()
            if len(tries) >= self.per_minute:
                return max(1, int(tries[0] + 60 - now + 0.999))
            tries.append(now)
            if len(self._tries) > 10_000:  # forget idle addresses rather than grow for ever
                for idle in [a for a, t in self._tries.items() if not t or t[-1] <= now - 60]:
                    del self._tries[idle]
            return 0


BAD_LOGIN = "wrong username or password"


def log_in(store: MonitoringStore, username: str, password: str, now: float) -> int:
    """The id of the user `username` when `password` is theirs, or LoginRefused: `bad_login`
    (the same for an unknown user, timed like a real check) or `locked` (too many failures:
    retry after the lock's remaining seconds). A failure counts towards the lock."""
    with store.engine.connect() as conn:
        row = conn.execute(
            select(user.c.id, user.c.password_hash, user.c.locked_until, user.c.disabled).where(
                user.c.username == username
            )
        ).first()
    if row is None or len(password) > MAX_PASSWORD_CHARS:
        _verify(_dummy_hash(), password[:MAX_PASSWORD_CHARS])
        raise LoginRefused("bad_login", BAD_LOGIN)
    user_id, hashed = int(row[0]), str(row[1])
    locked_until, disabled = int(row[2]), bool(row[3])
    if locked_until > now:
        wait = int(locked_until - now + 0.999)
        raise LoginRefused(
            "locked",
            f"too many failed logins: this account is locked for {(wait + 59) // 60} more "
            "minutes, or until a manager sets a new password",
            wait,
        )
    if not _verify(hashed, password) or disabled:
        with store.engine.begin() as conn:
            failures = 1 + int(
                conn.scalar(select(user.c.failed_logins).where(user.c.id == user_id)) or 0
            )
            locked = int(now) + LOCK_S if failures >= MAX_FAILURES else 0
            conn.execute(
                update(user)
                .where(user.c.id == user_id)
                .values(
                    failed_logins=0 if locked else failures,
                    locked_until=locked or locked_until,
                )
            )
        raise LoginRefused("bad_login", BAD_LOGIN)
    values: dict[str, Any] = {"failed_logins": 0}
    if _hasher.check_needs_rehash(hashed):
        values["password_hash"] = _hasher.hash(password)
    with store.engine.begin() as conn:
        conn.execute(update(user).where(user.c.id == user_id).values(**values))
    return user_id


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# ---------------------------------------------------------------- sessions


def start_session(store: MonitoringStore, user_id: int, now: float) -> str:
    """A new session of `user_id` for SESSION_S seconds: the cookie's token (only its hash is
    stored, with a fresh CSRF token)."""
    token = secrets.token_urlsafe(32)
    with store.engine.begin() as conn:
        conn.execute(delete(session).where(session.c.expires <= int(now)))  # sweep the old
        conn.execute(
            session.insert().values(
                token_hash=token_hash(token),
                user_id=user_id,
                csrf=secrets.token_urlsafe(32),
                created=int(now),
                expires=int(now) + SESSION_S,
            )
        )
    return token


def end_session(store: MonitoringStore, token: str) -> None:
    """Forget the session of cookie token `token` (logging out)."""
    with store.engine.begin() as conn:
        conn.execute(delete(session).where(session.c.token_hash == token_hash(token)))


def session_viewer(store: MonitoringStore, token: str, now: float) -> Viewer | None:
    """The viewer of a live session of cookie token `token`, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(
            select(
                user.c.id,
                user.c.username,
                user.c.role,
                user.c.community_id,
                user.c.member_id,
                session.c.csrf,
            )
            .join(user, user.c.id == session.c.user_id)
            .where(
                session.c.token_hash == token_hash(token),
                session.c.expires > int(now),
                user.c.disabled.is_(False),
            )
        ).first()
    if row is None:
        return None
    found = row._mapping
    return Viewer(
        found["id"],
        found["username"],
        found["role"],
        found["community_id"],
        found["member_id"],
        found["csrf"],
    )


# ---------------------------------------------------------------- dependencies


def viewer(request: Request) -> Viewer:
    """The signed-in viewer of `request` (also kept in `request.state.viewer`), or 401."""
    token = request.cookies.get(SESSION_COOKIE)
    service = monitor(request)
    found = session_viewer(service.store, token, service.now()) if token else None
    if found is None:
        raise ApiError(401, "unauthorized", "sign in first: your session is missing or ended")
    request.state.viewer = found
    return found


def require(*roles: str) -> Callable[..., Viewer]:
    """A dependency: the viewer, when their role is one of `roles`, else 403 `forbidden`."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"no role {', '.join(sorted(unknown))}: roles are {', '.join(ROLES)}")

    def allowed(who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
        if who.role not in roles:
            raise ApiError(403, "forbidden", "your account may not open this page")
        return who

    return allowed


def same_origin(request: Request) -> bool:
    """Whether the request's Origin (or else Referer), when sent, names this server's host."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return claimed is None
    return urlsplit(claimed).netloc == request.headers.get("host", "")


def check_csrf(request: Request, viewer: Viewer, token: str) -> None:
    """403 `bad_csrf` unless `token` is the viewer's session CSRF token and the request's
    Origin/Referer, when present, is this server."""
    if not (token and secrets.compare_digest(token, viewer.csrf)) or not same_origin(request):
        raise ApiError(
            403, "bad_csrf", "this form is out of date or came from another site: reload the page"
        )
