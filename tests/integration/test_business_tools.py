"""The catalog and the small-business tools against a real relay: product CRUD with paging
and price rules, quick replies with unique shortcuts, labels on chats, and their limits; all
shared by every device of the business and closed to other accounts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tresen.protocol.codes import Code
from tresen.relay.business import rules

from ..conftest import DeviceHandle, Harness


def error(response: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


async def business(relay: Harness, name: str = "Tool Shop") -> DeviceHandle:
    owner = await relay.new_device()
    r = await owner.http.post("/v1/business", json={"display_name": name})
    assert r.status_code == 201, r.text
    return owner


async def test_catalog_crud_and_paging(relay: Harness) -> None:
    owner = await business(relay)
    second_device = await relay.link_device(owner)
    person = await relay.new_device()
    ids = []
    for i in range(5):
        r = await owner.http.post(
            "/v1/business/products",
            json={
                "name": f"Rose {i}",
                "price": 199 + i,
                "currency": "eur",
                "retailer_id": f"SKU-{i}",
                "image": f"blob_{i}",
                "availability": "out_of_stock" if i == 3 else "in_stock",
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["currency"] == "EUR"
        ids.append(r.json()["id"])
    # paging, as a customer sees it
    seen, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after is not None:
            params["after"] = after
        page = (
            await person.http.get(f"/v1/business/{owner.account_id}/products", params=params)
        ).json()
        seen += [p["id"] for p in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ids
    in_stock = (
        await person.http.get(
            f"/v1/business/{owner.account_id}/products", params={"in_stock": "true"}
        )
    ).json()
    assert [p["name"] for p in in_stock["items"]] == ["Rose 0", "Rose 1", "Rose 2", "Rose 4"]
    # any device of the business edits
    r = await second_device.http.patch(
        f"/v1/business/products/{ids[0]}", json={"price": 250, "description": "Red", "image": None}
    )
    assert r.status_code == 200, r.text
    one = (await person.http.get(f"/v1/business/{owner.account_id}/products/{ids[0]}")).json()
    assert (one["price"], one["description"], one["image"], one["name"]) == (
        250,
        "Red",
        None,
        "Rose 0",
    )
    assert one["updated_at"] >= one["created_at"]
    r = await owner.http.delete(f"/v1/business/products/{ids[1]}")
    assert r.status_code == 204
    error(
        await person.http.get(f"/v1/business/{owner.account_id}/products/{ids[1]}"),
        404,
        Code.NOT_FOUND,
    )
    error(await owner.http.delete(f"/v1/business/products/{ids[1]}"), 404, Code.NOT_FOUND)


async def test_product_rules(relay: Harness) -> None:
    owner = await business(relay)
    post = owner.http.post
    base = {"name": "Tulip", "price": 100, "currency": "EUR"}
    for body, field in [
        ({**base, "currency": "EUX"}, "currency"),
        ({**base, "price": -1}, "price"),
        ({**base, "name": " "}, "name"),
        ({**base, "name": "n" * 201}, "name"),
        ({**base, "description": "d" * 5001}, "description"),
    ]:
        problem = error(await post("/v1/business/products", json=body), 400, Code.INVALID_PRODUCT)
        assert problem["fields"]["field"] == field
    error(
        await post("/v1/business/products", json={**base, "availability": "maybe"}),
        400,
        Code.BAD_REQUEST,
    )
    error(
        await post("/v1/business/products", json={"name": "x", "price": 1}), 400, Code.BAD_REQUEST
    )
    r = await post("/v1/business/products", json={**base, "retailer_id": "T-1"})
    first = r.json()["id"]
    error(
        await post("/v1/business/products", json={**base, "retailer_id": "T-1"}),
        409,
        Code.PRODUCT_EXISTS,
    )
    r = await post("/v1/business/products", json={**base, "retailer_id": "T-2"})
    error(
        await owner.http.patch(
            f"/v1/business/products/{r.json()['id']}", json={"retailer_id": "T-1"}
        ),
        409,
        Code.PRODUCT_EXISTS,
    )
    error(
        await owner.http.patch(f"/v1/business/products/{first}", json={"currency": "ZZZ"}),
        400,
        Code.INVALID_PRODUCT,
    )
    # a failed edit changed nothing
    assert (await owner.http.get(f"/v1/business/{owner.account_id}/products/{first}")).json()[
        "currency"
    ] == "EUR"
    # another business cannot touch this catalog
    other = await business(relay, "Other")
    error(
        await other.http.patch(f"/v1/business/products/{first}", json={"price": 1}),
        404,
        Code.NOT_FOUND,
    )
    error(await other.http.delete(f"/v1/business/products/{first}"), 404, Code.NOT_FOUND)


async def test_quick_replies(relay: Harness) -> None:
    owner = await business(relay)
    linked = await relay.link_device(owner)
    r = await owner.http.post(
        "/v1/business/quick-replies",
        json={"shortcut": "/Thanks", "text": "Thank you for your order!"},
    )
    assert r.status_code == 201, r.text
    thanks = r.json()
    assert thanks["shortcut"] == "thanks"
    error(
        await linked.http.post(
            "/v1/business/quick-replies", json={"shortcut": "thanks", "text": "dup"}
        ),
        409,
        Code.QUICK_REPLY_EXISTS,
    )
    r = await linked.http.post(
        "/v1/business/quick-replies", json={"shortcut": "hours", "text": "9 to 5"}
    )
    hours = r.json()
    error(
        await owner.http.put(
            f"/v1/business/quick-replies/{hours['id']}", json={"shortcut": "thanks", "text": "x"}
        ),
        409,
        Code.QUICK_REPLY_EXISTS,
    )
    r = await owner.http.put(
        f"/v1/business/quick-replies/{hours['id']}", json={"shortcut": "hours", "text": "9 to 6"}
    )
    assert r.json()["text"] == "9 to 6"
    listed = (await linked.http.get("/v1/business/quick-replies")).json()
    assert [(q["shortcut"], q["text"]) for q in listed] == [
        ("hours", "9 to 6"),
        ("thanks", "Thank you for your order!"),
    ]
    for bad in (
        {"shortcut": "has space", "text": "x"},
        {"shortcut": "a" * 26, "text": "x"},
        {"shortcut": "ok", "text": "  "},
    ):
        error(
            await owner.http.post("/v1/business/quick-replies", json=bad),
            400,
            Code.INVALID_BUSINESS_PROFILE,
        )
    assert (
        await owner.http.delete(f"/v1/business/quick-replies/{thanks['id']}")
    ).status_code == 204
    error(
        await owner.http.delete(f"/v1/business/quick-replies/{thanks['id']}"), 404, Code.NOT_FOUND
    )
    for i in range(49):
        r = await owner.http.post(
            "/v1/business/quick-replies", json={"shortcut": f"q{i}", "text": "t"}
        )
        assert r.status_code == 201
    problem = error(
        await owner.http.post(
            "/v1/business/quick-replies", json={"shortcut": "one_more", "text": "t"}
        ),
        409,
        Code.BUSINESS_LIMIT,
    )
    assert problem["fields"]["limit"] == 50
    other = await business(relay, "Other")
    assert (await other.http.get("/v1/business/quick-replies")).json() == []
    error(await other.http.delete(f"/v1/business/quick-replies/{hours['id']}"), 404, Code.NOT_FOUND)
    person = await relay.new_device()
    error(await person.http.get("/v1/business/quick-replies"), 404, Code.NOT_A_BUSINESS)


async def test_labels_on_chats(relay: Harness) -> None:
    owner = await business(relay)
    a, b, c = [await relay.new_device() for _ in range(3)]
    new = (await owner.http.post("/v1/business/labels", json={"name": "New customer"})).json()
    paid = (
        await owner.http.post("/v1/business/labels", json={"name": "Paid", "color": "#00aa00"})
    ).json()
    assert paid["color"] == "#00AA00" and new["chats"] == 0
    error(
        await owner.http.post("/v1/business/labels", json={"name": "paid"}), 409, Code.LABEL_EXISTS
    )
    error(
        await owner.http.post("/v1/business/labels", json={"name": "X", "color": "red"}),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    for person in (c, a, b):
        r = await owner.http.put(f"/v1/business/labels/{new['id']}/chats/{person.account_id}")
        assert r.status_code == 204, r.text
    await owner.http.put(f"/v1/business/labels/{paid['id']}/chats/{a.account_id}")
    await owner.http.put(f"/v1/business/labels/{paid['id']}/chats/{a.account_id}")  # idempotent
    chats = (await owner.http.get(f"/v1/business/labels/{new['id']}/chats")).json()
    assert chats["chats"] == sorted([a.account_id, b.account_id, c.account_id])
    page = (
        await owner.http.get(
            f"/v1/business/labels/{new['id']}/chats",
            params={"limit": 1, "after": chats["chats"][0]},
        )
    ).json()
    assert page["chats"] == [chats["chats"][1]]
    assert (await owner.http.get(f"/v1/business/chats/{a.account_id}/labels")).json() == sorted(
        [new["id"], paid["id"]]
    )
    labels = {
        lab["name"]: lab["chats"] for lab in (await owner.http.get("/v1/business/labels")).json()
    }
    assert labels == {"New customer": 3, "Paid": 1}
    r = await owner.http.delete(f"/v1/business/labels/{new['id']}/chats/{b.account_id}")
    assert r.status_code == 204
    error(
        await owner.http.delete(f"/v1/business/labels/{new['id']}/chats/{b.account_id}"),
        404,
        Code.NOT_FOUND,
    )
    error(
        await owner.http.put(f"/v1/business/labels/{new['id']}/chats/99999999"),
        404,
        Code.UNKNOWN_RECIPIENT,
    )
    r = await owner.http.patch(
        f"/v1/business/labels/{new['id']}", json={"name": "Returning", "color": "#123456"}
    )
    assert r.json()["name"] == "Returning" and r.json()["chats"] == 2
    error(
        await owner.http.patch(f"/v1/business/labels/{new['id']}", json={"name": "Paid"}),
        409,
        Code.LABEL_EXISTS,
    )
    # another business sees none of it and cannot use these labels
    other = await business(relay, "Other")
    error(await other.http.get(f"/v1/business/labels/{paid['id']}/chats"), 404, Code.NOT_FOUND)
    error(
        await other.http.put(f"/v1/business/labels/{paid['id']}/chats/{b.account_id}"),
        404,
        Code.NOT_FOUND,
    )
    assert (await other.http.get(f"/v1/business/chats/{a.account_id}/labels")).json() == []
    # deleting a label takes it off every chat
    assert (await owner.http.delete(f"/v1/business/labels/{paid['id']}")).status_code == 204
    assert (await owner.http.get(f"/v1/business/chats/{a.account_id}/labels")).json() == [new["id"]]
    for i in range(19):
        assert (
            await owner.http.post("/v1/business/labels", json={"name": f"L{i}"})
        ).status_code == 201
    error(
        await owner.http.post("/v1/business/labels", json={"name": "L99"}), 409, Code.BUSINESS_LIMIT
    )


async def test_catalog_size_limit(relay: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "MAX_PRODUCTS", 2)
    owner = await business(relay)
    for name in ("a", "b"):
        r = await owner.http.post(
            "/v1/business/products", json={"name": name, "price": 1, "currency": "USD"}
        )
        assert r.status_code == 201
    problem = error(
        await owner.http.post(
            "/v1/business/products", json={"name": "c", "price": 1, "currency": "USD"}
        ),
        409,
        Code.BUSINESS_LIMIT,
    )
    assert problem["fields"]["limit"] == 2
