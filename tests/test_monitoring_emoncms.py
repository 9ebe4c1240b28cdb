"""The emoncms-compatible input and feed APIs (monitoring.emoncms): requests exactly as emonhub
and Node-RED send them are stored and read back as emoncms answers them; every refusal
refuses the whole request with its stable code, stores nothing and is counted; the parsers
raise nothing but `Refused` whatever text arrives."""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.emoncms import (
    MAX_BODY,
    MAX_VALUES,
    bulk_samples,
    emoncms_router,
    full_json_inputs,
    loose_inputs,
    post_samples,
    series,
)
from monitoring.keys import create_key
from monitoring.samples import Refused
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore
from service.http import install_error_handlers

NOW = 1_750_000_000  # 2025-06-15T15:06:40Z, the service's clock in every test
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Service:
    """The service under test: its store, a client, and a write, a read and a community key."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
        self.store.put_community("valle", "Valle Solar", "Europe/Madrid")
        self.store.put_community("monte", "Monte Verde", "Europe/Rome")
        self.write = create_key(self.store, "emonhub", "write", None, NOW)
        self.read = create_key(self.store, "dashboard", "read", None, NOW)
        self.valle = create_key(self.store, "valle gateway", "write", "valle", NOW)
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(emoncms_router(MonitorService(self.store, clock=lambda: NOW)))
        self.http = TestClient(app)

    def values(self, node: str, name: str) -> list[tuple[int, float]]:
        feed = self.store.feed_named(node, name)
        assert feed is not None, f"no feed {node}/{name}"
        return [(t, v) for t, v, _ in self.store.samples(feed.id, 0, NOW + 10**6)]

    def stored(self) -> int:
        return sum(len(self.store.samples(f.id, 0, NOW + 10**6)) for f in self.store.feeds())

    def feed_id(self, node: str, name: str) -> int:
        feed = self.store.feed_named(node, name)
        assert feed is not None
        return feed.id


@pytest.fixture(name="svc")
def service_fixture(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path)
    yield service
    service.http.close()
    service.store.close()


# ---------------------------------------------------------------- emonhub


def test_emonhub_posts_bulk_with_sentat_and_gets_ok(svc: Service) -> None:
    """emonhub: POST /input/bulk.json?sentat=..., data in a form body, Bearer key; its clock
    runs 5 s behind, so every time moves 5 s forward."""
    sentat = NOW - 5
    frames = [[sentat - 30, 10, 250.5, 1200], [sentat - 20, 10, 260, 1190], [sentat, 11, 3.5]]
    answer = svc.http.post(
        f"/input/bulk.json?sentat={sentat}",
        content=urlencode({"data": json.dumps(frames, separators=(",", ":"))}),
        headers={**FORM, "Authorization": f"Bearer {svc.write}"},
    )
    assert answer.status_code == 200
    assert answer.text == "ok"
    assert answer.headers["content-type"].startswith("text/plain")
    assert svc.values("10", "1") == [(NOW - 30, 250.5), (NOW - 20, 260.0)]
    assert svc.values("10", "2") == [(NOW - 30, 1200.0), (NOW - 20, 1190.0)]
    assert svc.values("11", "1") == [(NOW, 3.5)]


def test_emonhub_compressed_bulk_with_names(svc: Service) -> None:
    """emonhub with sendnames: zlib-compressed JSON body, `cb=1`, frames with a name object."""
    frames = [[NOW - 10, "emontx4", {"P1": 100, "E1": 12.5, "rssi": -60}]]
    body = zlib.compress(json.dumps(frames).encode())
    answer = svc.http.post(
        f"/input/bulk.json?sentat={NOW}&cb=1",
        content=body,
        headers={"Authorization": f"Bearer {svc.write}"},
    )
    assert (answer.status_code, answer.text) == (200, "ok")
    assert svc.values("emontx4", "P1") == [(NOW - 10, 100.0)]
    assert svc.values("emontx4", "rssi") == [(NOW - 10, -60.0)]


@pytest.mark.parametrize(
    ("extra", "times"),
    [
        ({"offset": "-10"}, [NOW + 10 - 4, NOW + 10 - 2]),  # emoncms: now - offset + item
        ({"time": str(NOW - 100)}, [NOW - 100 - 4, NOW - 100 - 2]),  # time + item
        ({}, [NOW - 2, NOW]),  # the last item arrived now
    ],
)
def test_bulk_times_follow_emoncms_modes(
    svc: Service, extra: dict[str, str], times: list[int]
) -> None:
    params = {"data": "[[-4,5,1],[-2,5,2]]", "apikey": svc.write, **extra}
    answer = svc.http.get("/input/bulk", params=params)
    assert (answer.status_code, answer.text) == (200, "ok")
    assert svc.values("5", "1") == [(times[0], 1.0), (times[1], 2.0)]


def test_bulk_items_with_unix_times_and_no_parameter_are_absolute(svc: Service) -> None:
    data = json.dumps([[NOW - 3600, 8, 1], [NOW - 1800, 8, 2]])
    answer = svc.http.post("/input/bulk", data={"data": data, "apikey": svc.write})
    assert (answer.status_code, answer.text) == (200, "ok")
    assert svc.values("8", "1") == [(NOW - 3600, 1.0), (NOW - 1800, 2.0)]
    # One offset among them: emoncms's legacy rule (the last item arrived now) makes the
    # unix time an offset from now, decades ahead, and the post is refused whole.
    mixed = json.dumps([[NOW - 60, 9, 1], [-2, 9, 2]])
    answer = svc.http.post("/input/bulk", data={"data": mixed, "apikey": svc.write})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "bad_time")
    assert svc.store.feed_named("9", "1") is None


def test_bulk_skips_frames_without_values_and_null_values(svc: Service) -> None:
    data = json.dumps([[NOW - 9, 7], [NOW - 8, 7, None, 4], [NOW, 7, 5]])
    answer = svc.http.get("/input/bulk", params={"data": data, "apikey": svc.write, "sentat": NOW})
    assert answer.text == "ok"
    assert svc.values("7", "1") == [(NOW, 5.0)]
    assert svc.values("7", "2") == [(NOW - 8, 4.0)]


# ---------------------------------------------------------------- Node-RED and input/post


def test_node_red_posts_fulljson_and_gets_success(svc: Service) -> None:
    """Node-RED's emoncms node: GET /input/post?fulljson=<encoded>&node=N&apikey=K&time=T,
    where T may be fractional seconds (Date.parse / 1000)."""
    payload = json.dumps({"power": 420.5, "temp": "21.5", "relay": True})
    url = f"/input/post?{urlencode({'fulljson': payload})}&node=house&apikey={svc.write}"
    answer = svc.http.get(f"{url}&time={NOW - 60}.25")
    assert (answer.status_code, answer.text) == (200, '{"success": true}')
    assert json.loads(answer.text) == {"success": True}
    assert svc.values("house", "power") == [(NOW - 60, 420.5)]
    assert svc.values("house", "temp") == [(NOW - 60, 21.5)]
    assert svc.values("house", "relay") == [(NOW - 60, 1.0)]


def test_fulljson_may_hold_its_time_and_the_parameter_wins(svc: Service) -> None:
    body = json.dumps({"TIME": NOW - 30, "p": 1})
    svc.http.post("/input/post", params={"node": "a", "fulljson": body, "apikey": svc.write})
    svc.http.post(
        "/input/post",
        params={"node": "b", "fulljson": body, "time": NOW - 7, "apikey": svc.write},
    )
    assert svc.values("a", "p") == [(NOW - 30, 1.0)]
    assert svc.values("b", "p") == [(NOW - 7, 1.0)]
    assert svc.store.feed_named("a", "TIME") is None


@pytest.mark.parametrize(
    ("form", "text", "expected"),
    [
        ("json", "{power1:100,power2:200}", {"power1": 100.0, "power2": 200.0}),
        ("json", '{"power1":100,"power2":-2.5e1}', {"power1": 100.0, "power2": -25.0}),
        ("json", "power1:100,power2:null", {"power1": 100.0}),
        ("csv", "100,200,300", {"1": 100.0, "2": 200.0, "3": 300.0}),
        ("data", "a:1, 2", {"a": 1.0, "1": 2.0}),
    ],
)
def test_the_loose_forms_as_emoncms_reads_them(
    svc: Service, form: str, text: str, expected: dict[str, float]
) -> None:
    answer = svc.http.get("/input/post.json", params={"node": 3, form: text, "apikey": svc.write})
    assert (answer.status_code, answer.text) == (200, "ok")
    assert {f.name: f.last_value for f in svc.store.feeds()} == expected
    assert {f.last_time for f in svc.store.feeds()} == {NOW}


def test_post_in_a_form_body_with_an_iso_time_and_node_zero_by_default(svc: Service) -> None:
    answer = svc.http.post(
        "/input/post",
        content=urlencode({"csv": "5", "time": "2025-06-15T16:00:00+02:00", "apikey": svc.write}),
        headers=FORM,
    )
    assert answer.text == "ok"
    assert svc.values("0", "1") == [(1_749_996_000, 5.0)]


def test_post_in_a_multipart_body(svc: Service) -> None:
    answer = svc.http.post(
        "/input/post", data={"node": "m", "csv": "1,2", "apikey": svc.write}, files={}
    )
    assert answer.text == "ok", answer.text
    multipart = svc.http.post(
        "/input/post",
        files={"node": (None, "mp"), "csv": (None, "7"), "apikey": (None, svc.write)},
    )
    assert multipart.text == "ok", multipart.text
    assert svc.values("mp", "1") == [(NOW, 7.0)]


# ---------------------------------------------------------------- reading back


def test_feeds_are_listed_as_emoncms_lists_them(svc: Service) -> None:
    svc.http.get("/input/post", params={"node": "house", "csv": "7.5", "apikey": svc.write})
    answer = svc.http.get("/feed/list.json", params={"apikey": svc.read})
    assert answer.status_code == 200
    (feed,) = answer.json()
    assert feed == {
        "id": str(svc.feed_id("house", "1")),
        "userid": "1",
        "name": "1",
        "tag": "house",
        "public": "0",
        "size": "0",
        "engine": "2",
        "processList": "",
        "unit": "",
        "time": NOW,
        "value": 7.5,
    }
    inputs = svc.http.get("/input/list.json", headers={"Authorization": f"Bearer {svc.read}"})
    assert [(i["nodeid"], i["name"], i["value"]) for i in inputs.json()] == [("house", "1", 7.5)]


def test_value_timevalue_and_fetch(svc: Service) -> None:
    svc.http.get("/input/post", params={"node": "n", "csv": "1,2", "apikey": svc.write})
    one, two = svc.feed_id("n", "1"), svc.feed_id("n", "2")
    key = {"apikey": svc.read}
    assert svc.http.get("/feed/value.json", params={"id": two, **key}).json() == 2.0
    timevalue = svc.http.get("/feed/timevalue.json", params={"id": one, **key}).json()
    assert timevalue == {"time": NOW, "value": 1.0}
    fetched = svc.http.get("/feed/fetch.json", params={"ids": f"{one},999,{two}", **key})
    assert fetched.json() == [1.0, False, 2.0]


@pytest.mark.parametrize("route", ["/feed/value.json", "/feed/timevalue.json"])
def test_a_missing_feed_answers_as_emoncms_with_404(svc: Service, route: str) -> None:
    answer = svc.http.get(route, params={"id": 999, "apikey": svc.read})
    assert answer.status_code == 404
    body = answer.json()
    assert (body["success"], body["message"]) == (False, "Feed does not exist")
    assert body["error"]["code"] == "not_found"


def test_data_averages_each_interval_in_milliseconds(svc: Service) -> None:
    """Samples every 10 s with values 0..11 over two minutes: each minute's mean by hand."""
    base = NOW - NOW % 60 - 120
    frames = [[base + 10 * i, "m", float(i)] for i in range(12)]
    svc.http.get("/input/bulk", params={"data": json.dumps(frames), "time": 0, "apikey": svc.write})
    feed = svc.feed_id("m", "1")
    params: dict[str, Any] = {"id": feed, "interval": 60, "apikey": svc.read}
    ms = svc.http.get(
        "/feed/data.json", params={**params, "start": base * 1000, "end": (base + 180) * 1000}
    )
    assert ms.status_code == 200, ms.text
    assert ms.json() == [[base * 1000, 2.5], [(base + 60) * 1000, 8.5], [(base + 120) * 1000, None]]
    seconds = svc.http.get(
        "/feed/data.json",
        params={**params, "start": base, "end": base + 180, "skipmissing": 1, "average": 1},
    )
    assert seconds.json() == ms.json()[:2]
    unix = svc.http.get(
        "/feed/data.json",
        params={**params, "start": base, "end": base + 120, "timeformat": "unix", "dp": 0},
    )
    assert unix.json() == [[base, 2.0], [base + 60, 8.0]]  # round half to even
    both = svc.http.get(
        "/feed/data.json",
        params={"ids": feed, "interval": 60, "start": base, "end": base + 60, "apikey": svc.read},
    )
    assert both.json() == [{"feedid": feed, "data": [[base * 1000, 2.5]]}]


def test_data_of_missing_feeds_and_bad_ranges(svc: Service) -> None:
    key = {"apikey": svc.read}
    missing = svc.http.get("/feed/data.json", params={"ids": "5,6", "start": 0, "end": 60, **key})
    assert missing.status_code == 404
    assert missing.json()["feeds"] == [5, 6]
    assert missing.json()["message"] == "2 feeds do not exist"
    svc.http.get("/input/post", params={"node": "n", "csv": "1", "apikey": svc.write})
    feed = svc.feed_id("n", "1")
    backwards = svc.http.get("/feed/data.json", params={"id": feed, "start": 60, "end": 0, **key})
    assert backwards.status_code == 400
    assert backwards.json()["message"] == "Request end time before start time"
    too_many = svc.http.get(
        "/feed/data.json", params={"id": feed, "start": 0, "end": 10**6, "interval": 1, **key}
    )
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "too_many"


def test_late_out_of_order_and_replaced_samples(svc: Service) -> None:
    def post(t: int, value: float) -> None:
        answer = svc.http.get(
            "/input/post", params={"node": "x", "csv": value, "time": t, "apikey": svc.write}
        )
        assert answer.text == "ok"

    post(NOW - 10, 1)
    post(NOW - 3600, 5)  # an hour late
    post(NOW - 20, 2)  # out of order
    post(NOW - 20, 4)  # replaces the one before
    assert svc.values("x", "1") == [(NOW - 3600, 5.0), (NOW - 20, 4.0), (NOW - 10, 1.0)]
    feed = svc.feed_id("x", "1")
    last = svc.http.get("/feed/timevalue.json", params={"id": feed, "apikey": svc.read})
    assert last.json() == {"time": NOW - 10, "value": 1.0}


def test_series_fills_the_grid_or_skips_missing_steps() -> None:
    means = [(120, 1.0), (300, 2.0)]
    assert series(means, 130, 360, 60, skip_missing=True) == [(120, 1.0), (300, 2.0)]
    assert series(means, 130, 360, 60, skip_missing=False) == [
        (120, 1.0),
        (180, None),
        (240, None),
        (300, 2.0),
    ]


# ---------------------------------------------------------------- keys and communities


def test_a_community_key_writes_and_sees_only_its_nodes(svc: Service) -> None:
    svc.http.get("/input/post", params={"node": "ana", "csv": "1", "apikey": svc.valle})
    assert svc.store.nodes("valle")[0]["name"] == "ana"
    svc.http.get("/input/post", params={"node": "bruno", "csv": "2", "apikey": svc.write})
    data = json.dumps([[NOW, "ana", 1], [NOW, "bruno", 3]])
    refused = svc.http.get("/input/bulk", params={"data": data, "apikey": svc.valle})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    listed = svc.http.get("/feed/list.json", params={"apikey": svc.valle}).json()
    assert [f["tag"] for f in listed] == ["ana"]
    hidden = svc.http.get(
        "/feed/value.json", params={"id": svc.feed_id("bruno", "1"), "apikey": svc.valle}
    )
    assert hidden.status_code == 404
    assert svc.values("ana", "1") == [(NOW, 1.0)]


# ---------------------------------------------------------------- refusals


def _bomb(depth: int) -> str:
    return "[" * depth + "]" * depth


REFUSALS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (name, route, params, status, code); "KEY" stands for the write key
    ("no key", "/input/post", {"csv": "1", "apikey": None}, 401, "unauthorized"),
    ("wrong key", "/input/post", {"csv": "1", "apikey": "f" * 32}, 401, "unauthorized"),
    ("read key", "/input/post", {"csv": "1", "apikey": "READ"}, 403, "forbidden"),
    ("bad node", "/input/post", {"node": "a b/c", "csv": "1"}, 400, "bad_name"),
    ("bad name", "/input/post", {"fulljson": '{"a/b":1}'}, 400, "bad_name"),
    ("bad value", "/input/post", {"json": "a:1,b:x"}, 400, "bad_value"),
    ("text value", "/input/post", {"fulljson": '{"a":1,"b":"abc"}'}, 400, "bad_value"),
    ("nan", "/input/post", {"fulljson": '{"a":NaN}'}, 400, "bad_value"),
    ("inf", "/input/bulk", {"data": "[[0,1,1e999]]"}, 400, "bad_value"),
    ("huge int", "/input/bulk", {"data": "[[0,1," + "9" * 400 + "]]"}, 400, "bad_value"),
    ("old time", "/input/post", {"csv": "1", "time": "12345"}, 400, "bad_time"),
    ("future", "/input/post", {"csv": "1", "time": str(NOW + 2 * 86_400)}, 400, "bad_time"),
    ("text time", "/input/post", {"csv": "1", "time": "yesterday"}, 400, "bad_time"),
    ("naive iso", "/input/post", {"csv": "1", "time": "2025-06-15T10:00:00"}, 400, "bad_time"),
    ("bulk time", "/input/bulk", {"data": '[["soon",1,1]]'}, 400, "bad_time"),
    ("no data", "/input/post", {"node": "a"}, 400, "malformed"),
    ("bad csv", "/input/post", {"csv": "1,,2"}, 400, "malformed"),
    ("bad json", "/input/post", {"json": "a:1:2"}, 400, "malformed"),
    ("bad fulljson", "/input/post", {"fulljson": '{"a":1'}, 400, "malformed"),
    ("nested", "/input/post", {"fulljson": '{"a":{"b":1}}'}, 400, "malformed"),
    ("bad bulk", "/input/bulk", {"data": "[[0,1,2]"}, 400, "malformed"),
    ("not frames", "/input/bulk", {"data": '{"a":1}'}, 400, "malformed"),
    ("bomb", "/input/bulk", {"data": _bomb(100_000)}, 400, "malformed"),
    ("bad hex", "/input/bulk", {"data": "zz", "c": "1"}, 400, "malformed"),
    ("too many", "/input/post", {"csv": ",".join(["1"] * (MAX_VALUES + 1))}, 413, "too_many"),
]


@pytest.mark.parametrize(
    ("route", "params", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSALS],
)
def test_every_refusal_has_its_code_stores_nothing_and_is_counted(
    svc: Service, route: str, params: dict[str, Any], status: int, code: str
) -> None:
    params = {"apikey": svc.write, **params}
    params["apikey"] = {"READ": svc.read}.get(params["apikey"], params["apikey"])
    if params["apikey"] is None:
        del params["apikey"]
    answer = svc.http.post(route, content=urlencode(params), headers=FORM)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"]["code"] == code
    assert body["success"] is False
    assert body["message"] == body["error"]["message"]
    assert svc.stored() == 0
    source = route.strip("/")
    assert [(r["source"], r["reason"], r["count"]) for r in svc.store.refusals()] == [
        (source, code, 1)
    ]


def test_a_request_with_one_bad_item_stores_none_and_names_the_item(svc: Service) -> None:
    data = json.dumps([[NOW - 2, 1, 5], [NOW - 1, 1, 6], [NOW, 1, "x"]])
    answer = svc.http.get("/input/bulk", params={"data": data, "apikey": svc.write})
    assert answer.status_code == 400
    assert answer.json()["error"]["item"] == 2
    assert "item 2" in answer.json()["message"]
    assert svc.stored() == 0


def test_a_huge_body_is_refused_before_it_is_read(svc: Service) -> None:
    answer = svc.http.post(
        "/input/bulk", content=b"data=" + b"1" * MAX_BODY, headers={**FORM, "Authorization": "x"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"
    assert svc.store.refusals()[0]["reason"] == "too_large"


def test_a_compressed_bomb_is_refused(svc: Service) -> None:
    bomb = zlib.compress(b"[" * (MAX_BODY + 10), 9)
    answer = svc.http.post(
        f"/input/bulk?cb=1&apikey={svc.write}", content=bomb, headers={"Content-Type": "x"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"


def test_a_wrong_key_answers_401_with_a_bearer_challenge_on_reads_too(svc: Service) -> None:
    answer = svc.http.get("/feed/list.json", params={"apikey": "nope"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["error"]["code"] == "unauthorized"
    assert svc.http.get("/feed/list.json").status_code == 401


# ---------------------------------------------------------------- the parsers never crash


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_the_loose_and_json_parsers_raise_nothing_but_refused(text: str) -> None:
    for parse in (loose_inputs, full_json_inputs):
        with contextlib.suppress(Refused):
            parse(text)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(st.text(max_size=200), JSONISH.map(json.dumps)),
    extra=st.dictionaries(
        st.sampled_from(["sentat", "offset", "time", "node", "csv", "fulljson"]),
        st.text(max_size=12) | st.integers().map(str),
    ),
)
def test_the_bulk_and_post_parsers_raise_nothing_but_refused(
    data: str, extra: dict[str, str]
) -> None:
    with contextlib.suppress(Refused):
        bulk_samples(extra, data, NOW)
    with contextlib.suppress(Refused):
        post_samples({**extra, "json": data}, NOW)
