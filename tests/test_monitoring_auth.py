"""Users, sessions and login limits of the monitoring pages, through FastAPI's TestClient over
a real store: Argon2id hashes, a session cookie whose token only the server's hash knows, its
flags, expiry and logout, CSRF on every form, the per-user lock and the per-address limit."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_monitoring_pages import (
    ANA_CUPS,
    NOW,
    PASSWORD,
    login_csrf,
    monitoring_app,
    page_csrf,
    seeded_file_fixture,
    signed_in,
)

from monitoring.auth import (
    LOCK_S,
    SESSION_COOKIE,
    SESSION_S,
    Viewer,
    create_user,
    list_users,
    require,
    set_password,
    viewer,
)
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore, session, user

__all__ = ["seeded_file_fixture"]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock()


@pytest.fixture(name="service")
def service_fixture(seeded_file: Path, tmp_path: Path, clock: Clock) -> Iterator[MonitorService]:
    path = tmp_path / "monitor.sqlite"
    shutil.copyfile(seeded_file, path)
    store = MonitoringStore(f"sqlite:///{path}")
    yield MonitorService(store, clock=clock)
    store.close()


def app_with_json_route(service: MonitorService) -> FastAPI:
    """The pages, and a JSON route behind `viewer` and one behind `require("operator")`, as
    other routers use them."""
    app = monitoring_app(service)
    router = APIRouter()

    @router.get("/whoami.json")
    def whoami(who: Annotated[Viewer, Depends(viewer)]) -> dict[str, str]:
        return {"username": who.username, "role": who.role}

    @router.get("/operators.json")
    def operators(who: Annotated[Viewer, Depends(require("operator"))]) -> dict[str, str]:
        return {"username": who.username}

    app.include_router(router)
    return app


@pytest.fixture(name="client")
def client_fixture(service: MonitorService) -> Iterator[TestClient]:
    with TestClient(app_with_json_route(service), follow_redirects=False) as client:
        yield client


def attempt(client: TestClient, username: str, password: str) -> int:
    answer = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": login_csrf(client)},
    )
    return int(answer.status_code)


# ---------------------------------------------------------------- users


def test_passwords_are_stored_as_argon2id_hashes(service: MonitorService) -> None:
    with service.store.engine.connect() as conn:
        hashes: list[str] = list(conn.scalars(select(user.c.password_hash)))
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)
    listed = list_users(service.store)
    assert {u["username"] for u in listed} == {"ana", "ben", "gestora", "gestor_luna"}
    assert all("password_hash" not in u for u in listed)


@pytest.mark.parametrize(
    ("username", "password", "role", "extra", "said"),
    [
        ("new", "short", "operator", {}, "at least 10 characters"),
        ("new", PASSWORD, "admin", {}, "role is one of"),
        ("new", PASSWORD, "member", {}, "must name the member"),
        ("new", PASSWORD, "member", {"member_id": 999}, "no member 999"),
        ("new", PASSWORD, "member", {"member_id": 1, "community_id": "luna"}, "not in community"),
        ("new", PASSWORD, "manager", {}, "must name the community"),
        ("new", PASSWORD, "manager", {"community_id": "mars"}, "no community"),
        ("ana", PASSWORD, "operator", {}, "already a user"),
        ("no spaces", PASSWORD, "operator", {}, "a username is"),
    ],
)
def test_a_user_that_cannot_be_is_refused_with_a_reason(
    service: MonitorService,
    username: str,
    password: str,
    role: str,
    extra: dict[str, object],
    said: str,
) -> None:
    with pytest.raises(ValueError, match=said):
        create_user(service.store, username, password, role, **extra)  # type: ignore[arg-type]


# ---------------------------------------------------------------- sessions


@pytest.mark.parametrize("secure", [False, True])
def test_the_session_cookie_is_http_only_strict_and_secure_when_served_so(
    service: MonitorService, secure: bool
) -> None:
    service.secure_cookies = secure
    base = "https://testserver" if secure else "http://testserver"  # Secure cookies need TLS
    with TestClient(monitoring_app(service), base_url=base, follow_redirects=False) as client:
        answer = client.post(
            "/login", data={"username": "ana", "password": PASSWORD, "csrf": login_csrf(client)}
        )
    assert answer.status_code == 303
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    )
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= flags
    assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower() + ";"
    assert ("secure" in flags) is secure
    token = cookie.split(";")[0].split("=", 1)[1]
    with service.store.engine.connect() as conn:
        stored: list[str] = list(conn.scalars(select(session.c.token_hash)))
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]  # never the token itself


def test_a_session_ends_after_twelve_hours(client: TestClient, clock: Clock) -> None:
    signed_in(client, "ana")
    clock.now += SESSION_S - 1
    assert client.get("/member").status_code == 200
    clock.now += 2
    answer = client.get("/member")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


def test_json_routes_answer_401_and_403_not_a_redirect(client: TestClient) -> None:
    refused = client.get("/whoami.json")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    signed_in(client, "ana")
    assert client.get("/whoami.json").json() == {"username": "ana", "role": "member"}
    forbidden = client.get("/operators.json")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"


def test_logout_needs_the_csrf_token_and_ends_the_session(client: TestClient) -> None:
    signed_in(client, "ana")
    token = page_csrf(client.get("/member").text)
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/member").status_code == 200  # the forged logout changed nothing
    cross = client.post("/logout", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    answer = client.post("/logout", data={"csrf": token}, headers={"Origin": "http://testserver"})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert client.get("/member").status_code == 303


def test_a_new_password_ends_the_other_sessions(service: MonitorService) -> None:
    app = monitoring_app(service)
    with (
        TestClient(app, follow_redirects=False) as kept,
        TestClient(app, follow_redirects=False) as other,
    ):
        signed_in(kept, "ana")
        signed_in(other, "ana")
        set_password(
            service.store, "ana", "another good password", keep_session=kept.cookies[SESSION_COOKIE]
        )
        assert kept.get("/member").status_code == 200
        assert other.get("/member").status_code == 303
        assert attempt(other, "ana", PASSWORD) == 401
        assert attempt(other, "ana", "another good password") == 303


# ---------------------------------------------------------------- logging in


def test_wrong_password_and_unknown_user_read_the_same(client: TestClient) -> None:
    wrong = client.post(
        "/login",
        data={"username": "ana", "password": "not her password", "csrf": login_csrf(client)},
    )
    unknown = client.post(
        "/login",
        data={"username": "nobody", "password": "not her password", "csrf": login_csrf(client)},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        "wrong username or password" in wrong.text and "wrong username or password" in unknown.text
    )
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        (None, {}),
        ("forged", {}),
        ("same", {"Origin": "https://evil.example"}),
        ("same", {"Referer": "https://evil.example/login"}),
        ("same", {"Origin": "null"}),
    ],
)
def test_a_login_without_its_csrf_token_or_from_elsewhere_is_refused(
    client: TestClient, csrf: str | None, headers: dict[str, str]
) -> None:
    token = login_csrf(client)
    data = {"username": "ana", "password": PASSWORD}
    if csrf is not None:
        data["csrf"] = token if csrf == "same" else csrf
    answer = client.post("/login", data=data, headers=headers)
    assert answer.status_code == 403
    assert 'data-code="bad_csrf"' in answer.text
    assert SESSION_COOKIE not in client.cookies


def test_five_failures_lock_the_user_for_fifteen_minutes(client: TestClient, clock: Clock) -> None:
    for _ in range(5):
        assert attempt(client, "ana", "not her password") == 401
    locked = client.post(
        "/login", data={"username": "ana", "password": PASSWORD, "csrf": login_csrf(client)}
    )
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= LOCK_S
    assert 'data-code="locked"' in locked.text
    assert attempt(client, "ben", PASSWORD) == 303  # another user is not locked
    client.cookies.clear()
    clock.now += LOCK_S + 1
    assert attempt(client, "ana", PASSWORD) == 303


def test_an_address_tries_at_most_twenty_times_a_minute(client: TestClient, clock: Clock) -> None:
    for i in range(20):
        assert attempt(client, f"nobody{i}", "a wrong password") == 401
    refused = client.post(
        "/login", data={"username": "ana", "password": PASSWORD, "csrf": login_csrf(client)}
    )
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert 'data-code="too_many_attempts"' in refused.text
    assert refused.headers["content-security-policy"].startswith("default-src 'self'")
    clock.now += 61
    assert attempt(client, "ana", PASSWORD) == 303


def test_the_login_returns_where_it_was_sent_from(client: TestClient) -> None:
    target = f"/member/supply/{ANA_CUPS}?view=month"
    first = client.get(target)
    assert first.status_code == 303
    form = client.get(first.headers["location"])
    assert 'name="next" value="/member/supply/' in form.text
    answer = client.post(
        "/login",
        data={
            "username": "ana",
            "password": PASSWORD,
            "csrf": page_csrf(form.text),
            "next": target,
        },
    )
    assert answer.headers["location"] == target
    client.cookies.clear()
    away = client.post(
        "/login",
        data={
            "username": "ana",
            "password": PASSWORD,
            "csrf": login_csrf(client),
            "next": "//evil.example/",
        },
    )
    assert away.headers["location"] == "/"  # never to another site
