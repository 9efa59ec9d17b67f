"""Metering and billing: every delivered business message is metered with its category, the
recipient's country and its pricing type; a rate card prices it; usage, invoices, a prepaid
balance that refuses billable sends when used up while service replies keep flowing."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from typing import Any

from tresen.protocol.codes import Code

from ..conftest import DeviceHandle, Harness
from ._policy import (
    admin_client,
    approved_template,
    error,
    make_business,
    messages,
    opt_in,
    refused,
    send,
    template,
)


def today(relay: Harness) -> str:
    return datetime.fromtimestamp(relay.clock.now_ms() / 1000, UTC).strftime("%Y-%m-%d")


async def usage(relay: Harness, shop: DeviceHandle, expect: int) -> dict[str, Any]:
    """The usage once ``expect`` messages are delivered (acks travel after the recv)."""
    day = today(relay)
    for _ in range(1000):
        r = await shop.http.get("/v1/business/usage", params={"start": day, "end": day})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["messages"] >= expect:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {body['messages']} of {expect} messages were delivered")


async def top_up(relay: Harness, shop: DeviceHandle, amount: int) -> dict[str, Any]:
    async with await admin_client(relay) as admin:
        r = await admin.post(
            f"/v1/admin/billing/{shop.account_id}/top-up",
            json={"amount_minor": amount, "note": "bank transfer"},
        )
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result


async def test_delivered_messages_are_metered_and_priced(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop, "receipt", "UTILITY")
    await approved_template(relay, shop, "promo", "MARKETING")
    person = await relay.new_device()  # a German number: DE prices
    await opt_in(person, shop, "utility", "marketing")
    assert (await top_up(relay, shop, 1000))["balance_minor"] == 1000
    conn = await shop.connect()
    await send(conn, person, template("receipt"))  # outside the window: billable
    await send(conn, person, template("promo", "MARKETING"))
    # not delivered yet: nothing metered
    day = today(relay)
    r = await shop.http.get("/v1/business/usage", params={"start": day, "end": day})
    assert r.json()["messages"] == 0
    pconn = await person.connect()
    await messages(pconn, 2)
    await send(pconn, shop)  # opens the customer-service window
    await send(conn, person)  # a service reply: free
    await send(conn, person, template("receipt"))  # utility inside the window: free
    await send(conn, person, template("promo", "MARKETING"))  # marketing: always billed
    await messages(pconn, 3)
    # an entry from the QR code makes everything free for 72 hours
    visitor = await relay.new_device()
    await opt_in(visitor, shop, "marketing")
    r = await visitor.http.post(f"/v1/entry/{shop.account_id}", json={"source": "qr"})
    assert r.status_code == 200
    await send(conn, visitor, template("promo", "MARKETING"))
    vconn = await visitor.connect()
    await messages(vconn, 1)
    body = await usage(relay, shop, 6)
    rows = {
        (r["category"], r["pricing_type"]): (r["messages"], r["amount_minor"]) for r in body["rows"]
    }
    assert rows == {
        ("MARKETING", "free_entry_point"): (1, 0),
        ("MARKETING", "regular"): (2, 22),
        ("SERVICE", "free_customer_service"): (1, 0),
        ("UTILITY", "free_customer_service"): (1, 0),
        ("UTILITY", "regular"): (1, 5),
    }
    assert (body["amount_minor"], body["currency"]) == (27, "EUR")
    account = (await shop.http.get("/v1/business/account")).json()
    assert account["balance_minor"] == 1000 - 27
    # a second device of the person acknowledging the same envelope is not billed twice
    assert (await usage(relay, shop, 6))["messages"] == 6


async def test_exhausted_balance_refuses_billable_sends_only(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop, "promo", "MARKETING")
    person = await relay.new_device()
    await opt_in(person, shop, "marketing")
    conn = await shop.connect()
    err = await refused(conn, person, template("promo", "MARKETING"), Code.PAYMENT_REQUIRED)
    assert "top up" in err.message
    pconn = await person.connect()
    await send(pconn, shop)
    await send(conn, person)  # service replies keep flowing
    await top_up(relay, shop, 11)  # one German marketing message
    await send(conn, person, template("promo", "MARKETING"))
    await messages(pconn, 2)
    for _ in range(1000):
        account = (await shop.http.get("/v1/business/account")).json()
        if account["available_minor"] <= 0:
            break
        await asyncio.sleep(0.02)
    assert (account["balance_minor"], account["available_minor"]) == (0, 0)
    await refused(conn, person, template("promo", "MARKETING"), Code.PAYMENT_REQUIRED)
    await send(conn, person)
    # a credit limit lets it owe
    async with await admin_client(relay) as admin:
        r = await admin.put(
            f"/v1/admin/billing/{shop.account_id}/credit-limit", json={"credit_limit_minor": 100}
        )
        assert r.json()["available_minor"] == 100, r.text
    await send(conn, person, template("promo", "MARKETING"))


async def test_invoices_as_csv_and_html(relay: Harness) -> None:
    shop = await make_business(relay, "Bäckerei <Süd>")
    await approved_template(relay, shop, "promo", "MARKETING")
    person = await relay.new_device()
    await opt_in(person, shop, "marketing")
    await top_up(relay, shop, 500)
    conn = await shop.connect()
    pconn = await person.connect()
    for _ in range(3):
        await send(conn, person, template("promo", "MARKETING"))
    await messages(pconn, 3)
    await usage(relay, shop, 3)
    month = today(relay)[:7]
    r = await shop.http.get(f"/v1/business/invoices/{month}/csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [
        (x["category"], x["pricing_type"], x["country"], x["messages"], x["amount_minor"])
        for x in rows
    ] == [
        ("MARKETING", "regular", "DE", "3", "33"),
        ("TOTAL", "", "", "3", "33"),
    ]
    r = await shop.http.get(f"/v1/business/invoices/{month}/html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Bäckerei &lt;Süd&gt;" in r.text and "0.33 EUR" in r.text and "4.67 EUR" in r.text
    r = await shop.http.get(f"/v1/business/invoices/{month}/pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF-") and r.content.rstrip().endswith(b"%%EOF")
    assert b"DejaVu" in r.content  # the embedded font that renders any business name
    invoice = (await shop.http.get(f"/v1/business/invoices/{month}")).json()
    assert (invoice["amount_minor"], invoice["billable_messages"]) == (33, 3)
    assert [p["amount_minor"] for p in invoice["payments"]] == [500]
    async with await admin_client(relay) as admin:
        r = await admin.get(
            f"/v1/admin/billing/{shop.account_id}/invoices/{month}", params={"format": "csv"}
        )
        assert r.text.splitlines()[1].endswith(",33,EUR")
    # an empty month, and a bad one
    r = await shop.http.get("/v1/business/invoices/2020-01")
    assert r.json()["messages"] == 0
    error(await shop.http.get("/v1/business/invoices/2026-13"), 400, Code.BAD_REQUEST)
    error(
        await shop.http.get(
            "/v1/business/usage", params={"start": "2026-11-02", "end": "2026-11-01"}
        ),
        400,
        Code.BAD_REQUEST,
    )


async def test_the_operator_replaces_the_rate_card(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop, "promo", "MARKETING")
    person = await relay.new_device()
    await opt_in(person, shop, "marketing")
    await top_up(relay, shop, 1000)
    async with await admin_client(relay) as admin:
        packaged = (await admin.get("/v1/admin/rate-card")).text
        assert packaged.splitlines()[0] == "category,country,price_minor,currency"
        assert "MARKETING,DE,11,EUR" in packaged
        for bad in (
            "category,country,price\nMARKETING,*,1\n",
            "category,country,price_minor,currency\nMARKETING,*,-1,EUR\n",
            "category,country,price_minor,currency\nMARKETING,*,1,EUR\nUTILITY,*,1,USD\n",
            "category,country,price_minor,currency\nMARKETING,DE,1,EUR\n",
            "category,country,price_minor,currency\nMARKETING,*,1,EUR\nUTILITY,*,1,EUR\n"
            "AUTHENTICATION,*,1,EUR\nMARKETING,germany,1,EUR\n",
        ):
            error(await admin.put("/v1/admin/rate-card", content=bad), 400, Code.INVALID_RATE_CARD)
        card = (
            "category,country,price_minor,currency\n"
            "MARKETING,*,7,EUR\nUTILITY,*,1,EUR\nAUTHENTICATION,*,2,EUR\nMARKETING,DE,50,EUR\n"
        )
        r = await admin.put("/v1/admin/rate-card", content=card)
        assert r.status_code == 200, r.text
        conn = await shop.connect()
        pconn = await person.connect()
        await send(conn, person, template("promo", "MARKETING"))
        await messages(pconn, 1)
        body = await usage(relay, shop, 1)
        assert body["amount_minor"] == 50
        # money is kept in one currency once any was recorded
        dollars = card.replace("EUR", "USD")
        body = error(
            await admin.put("/v1/admin/rate-card", content=dollars), 400, Code.INVALID_RATE_CARD
        )
        assert "kept in EUR" in body["message"]
        r = await admin.delete("/v1/admin/rate-card")
        assert "MARKETING,DE,11,EUR" in r.text
        audit = (await admin.get("/v1/admin/audit", params={"target": "rate_card"})).json()
        assert [e["action"] for e in audit["items"]] == [
            "billing.rate_card_reset",
            "billing.rate_card",
        ]


async def test_people_never_pay(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    aconn, bconn = await alice.connect(), await bob.connect()
    await send(aconn, bob)
    await messages(bconn, 1)
    error(
        await alice.http.get(
            "/v1/business/usage", params={"start": "2026-11-01", "end": "2026-11-01"}
        ),
        404,
        Code.NOT_A_BUSINESS,
    )
    await relay.services.policy.flush()

    async def count(txn: Any) -> int:
        row = await txn.fetchone("SELECT count(*) FROM business_sends")
        return int(row[0])

    assert await relay.services.db.run_interaction("count", count, write=False) == 0


async def test_a_delivery_after_a_restart_is_priced_from_the_meter(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop, "promo", "MARKETING")
    person = await relay.new_device()
    await opt_in(person, shop, "marketing")
    await top_up(relay, shop, 100)
    conn = await shop.connect()
    await send(conn, person, template("promo", "MARKETING"))
    gate = relay.services.policy
    await gate.flush()
    gate.meter.pending.clear()  # as after a restart: only the store knows the send
    pconn = await person.connect()
    await messages(pconn, 1)
    body = await usage(relay, shop, 1)
    assert (body["rows"][0]["pricing_type"], body["amount_minor"]) == ("regular", 11)
    assert (await shop.http.get("/v1/business/account")).json()["balance_minor"] == 89
