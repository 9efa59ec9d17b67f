"""Verification against a real relay: the business applies, the operator reviews through the
admin API (approve / reject with reason / revoke), the domain proof is checked against a real
local HTTP server and a real local DNS server, display names are approved, the verified badge
shows in every public lookup, and each operator action is in the audit log."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import httpx
import pytest

from tresen.protocol.codes import Code
from tresen.relay.admin.models import AdminPrincipal

from ..conftest import DeviceHandle, Harness

CONSOLE = AdminPrincipal(admin_id=None, name="test-console")


class ProofServer:
    """Serves ``body`` at the well-known path on 127.0.0.1 (port 0), in a thread."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/.well-known/tresen-verification.txt"
                self.send_response(owner.status if found else 404)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                if found:
                    self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class TxtServer(asyncio.DatagramProtocol):
    """A DNS server on 127.0.0.1 (port 0) answering TXT queries from ``records``."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".")
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            texts = [f'"{t}"' for t in self.records[name]]
            response.answer.append(
                dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, dns.rdatatype.TXT, *texts)
            )
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
def proof_server() -> Iterator[ProofServer]:
    server = ProofServer()
    yield server
    server.close()


@pytest.fixture
async def txt_server() -> AsyncIterator[tuple[TxtServer, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        TxtServer, local_addr=("127.0.0.1", 0)
    )
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


@pytest.fixture
def relay_settings(txt_server: tuple[TxtServer, int]) -> dict[str, Any]:
    return {
        "domain_proof_allow_loopback_http": True,
        "domain_proof_timeout_seconds": 3.0,
        "domain_proof_nameservers": f"127.0.0.1:{txt_server[1]}",
    }


def error(response: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


async def setup(
    relay: Harness, name: str = "Verified Vineyard"
) -> tuple[DeviceHandle, httpx.AsyncClient]:
    owner = await relay.new_device()
    r = await owner.http.post("/v1/business", json={"display_name": name})
    assert r.status_code == 201, r.text
    created = await relay.services.admins.do_create_token(CONSOLE, "reviewer")
    return owner, relay.client(created.token)


async def apply(owner: DeviceHandle, domain: str = "vineyard.example") -> dict[str, Any]:
    r = await owner.http.post(
        "/v1/business/verification",
        json={"legal_name": "Vineyard GmbH", "registration_number": "HRB 12345", "domain": domain},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def audit_actions(admin: httpx.AsyncClient, target: str) -> list[str]:
    page = (await admin.get("/v1/admin/audit", params={"target": target})).json()
    return [e["action"] for e in reversed(page["items"])]


async def test_apply_review_and_badge(relay: Harness) -> None:
    owner, admin = await setup(relay)
    person = await relay.new_device()
    async with admin:
        application = await apply(owner)
        assert application["status"] == "pending"
        assert application["proof_token"].startswith("tv_")
        assert application["proof_url"] == (
            "https://vineyard.example/.well-known/tresen-verification.txt"
        )
        assert application["proof_dns_name"] == "_tresen-verification.vineyard.example"
        assert application["proof_dns_value"] == f"tresen-verification={application['proof_token']}"
        error(
            await owner.http.post(
                "/v1/business/verification",
                json={
                    "legal_name": "Vineyard GmbH",
                    "registration_number": "1",
                    "domain": "x.example",
                },
            ),
            409,
            Code.VERIFICATION_PENDING,
        )
        queue = (await admin.get("/v1/admin/businesses")).json()
        assert [b["business"]["account_id"] for b in queue] == [owner.account_id]
        assert queue[0]["phone"] == owner.phone
        target = f"/v1/admin/businesses/{owner.account_id}"
        r = await admin.post(f"{target}/verification/approve", json={"note": "papers ok"})
        assert r.status_code == 200, r.text
        # the name is still pending: no badge yet
        assert r.json()["business"]["verified"] is False
        assert (await person.http.get(f"/v1/business/{owner.account_id}")).json()[
            "verified"
        ] is False
        r = await admin.post(f"{target}/display-name/approve")
        assert r.json()["business"]["verified"] is True
        for path in (
            f"/v1/business/{owner.account_id}",
            "/v1/business/by-slug/verified-vineyard",
            f"/v1/accounts/{owner.account_id}",
        ):
            assert (await person.http.get(path)).json()["verified"] is True, path
        own = (await owner.http.get("/v1/business")).json()
        assert own["verified"] is True and own["verification"]["status"] == "approved"
        # nothing left to review
        assert (await admin.get("/v1/admin/businesses")).json() == []
        verified = (await admin.get("/v1/admin/businesses?status=verified")).json()
        assert [b["business"]["account_id"] for b in verified] == [owner.account_id]
        # a second decision on the same application is refused
        error(
            await admin.post(f"{target}/verification/approve", json={}), 409, Code.ALREADY_REVIEWED
        )
        error(
            await admin.post(f"{target}/display-name/reject", json={"reason": "x"}),
            409,
            Code.ALREADY_REVIEWED,
        )
        # renaming takes the badge away until the new name is approved
        await owner.http.patch("/v1/business", json={"display_name": "Vineyard & Sons"})
        assert (await person.http.get(f"/v1/business/{owner.account_id}")).json()[
            "verified"
        ] is False
        await admin.post(f"{target}/display-name/approve")
        assert (await person.http.get(f"/v1/business/{owner.account_id}")).json()[
            "verified"
        ] is True
        # revoking takes it away at once
        r = await admin.post(f"{target}/verification/revoke", json={"reason": "fraud report"})
        assert r.json()["business"]["verified"] is False
        assert (await person.http.get(f"/v1/accounts/{owner.account_id}")).json().get(
            "verified", False
        ) is False
        assert await audit_actions(admin, f"business:{owner.account_id}") == [
            "business.verification.approve",
            "business.display_name.approve",
            "business.display_name.approve",
            "business.verification.revoke",
        ]
        entry = (
            await admin.get("/v1/admin/audit", params={"action": "business.verification.approve"})
        ).json()["items"][0]
        assert entry["detail"]["note"] == "papers ok" and entry["admin_name"] == "reviewer"


async def test_reject_with_reason_and_reapply(relay: Harness) -> None:
    owner, admin = await setup(relay)
    async with admin:
        await apply(owner)
        target = f"/v1/admin/businesses/{owner.account_id}"
        error(await admin.post(f"{target}/verification/reject", json={}), 400, Code.BAD_REQUEST)
        error(
            await admin.post(f"{target}/verification/reject", json={"reason": ""}),
            400,
            Code.BAD_REQUEST,
        )
        r = await admin.post(
            f"{target}/verification/reject", json={"reason": "registration number not found"}
        )
        assert r.status_code == 200, r.text
        mine = (await owner.http.get("/v1/business/verification")).json()
        assert mine["status"] == "rejected" and mine["reason"] == "registration number not found"
        r = await admin.post(f"{target}/display-name/reject", json={"reason": "misleading"})
        own = (await owner.http.get("/v1/business")).json()
        assert own["display_name_status"] == "rejected"
        assert own["display_name_reason"] == "misleading"
        # re-apply after a rejection; resubmit the same name for review
        second = await apply(owner, "vineyard.example")
        assert second["id"] != mine["id"] and second["status"] == "pending"
        r = await owner.http.patch("/v1/business", json={"display_name": "Verified Vineyard"})
        assert r.json()["display_name_status"] == "pending"
        review = (await admin.get(target)).json()
        assert [v["status"] for v in review["history"]] == ["rejected", "pending"]
        assert await audit_actions(admin, f"business:{owner.account_id}") == [
            "business.verification.reject",
            "business.display_name.reject",
        ]


async def test_review_needs_an_admin(relay: Harness) -> None:
    owner, admin = await setup(relay)
    await admin.aclose()
    await apply(owner)
    target = f"/v1/admin/businesses/{owner.account_id}"
    # the business itself cannot approve its own application
    error(
        await owner.http.post(f"{target}/verification/approve", json={}), 403, Code.ADMIN_REQUIRED
    )
    error(await owner.http.post(f"{target}/display-name/approve"), 403, Code.ADMIN_REQUIRED)
    async with relay.client() as anonymous:
        error(
            await anonymous.post(f"{target}/verification/approve", json={}), 401, Code.UNAUTHORIZED
        )
    assert (await owner.http.get("/v1/business/verification")).json()["status"] == "pending"


async def test_domain_proof_over_http(relay: Harness, proof_server: ProofServer) -> None:
    owner, admin = await setup(relay)
    async with admin:
        application = await apply(owner, proof_server.domain)
        assert application["proof_url"].startswith(f"http://{proof_server.domain}/")
        target = f"/v1/admin/businesses/{owner.account_id}/verification/check-domain"
        # nothing served yet
        proof_server.status = 404
        r = await admin.post(target, json={"method": "http"})
        assert r.status_code == 200 and r.json()["ok"] is False
        assert "HTTP 404" in r.json()["detail"]
        proof_server.status = 200
        proof_server.body = b"someone else's token\n"
        r = await admin.post(target, json={"method": "http"})
        assert r.json()["ok"] is False and "does not contain" in r.json()["detail"]
        proof_server.body = f"\n{application['proof_token']}\n".encode()
        r = await admin.post(target, json={"method": "http"})
        result = r.json()
        assert result["ok"] is True and result["method"] == "http"
        assert result["verification"]["proof_ok"] is True
        assert result["verification"]["proof_method"] == "http"
        page = (
            await admin.get("/v1/admin/audit", params={"action": "business.domain_proof.check"})
        ).json()["items"]
        assert [e["detail"]["ok"] for e in page] == [True, False, False]
        own = (await owner.http.get("/v1/business/verification")).json()
        assert own["proof_ok"] is True


async def test_domain_proof_over_dns(relay: Harness, txt_server: tuple[TxtServer, int]) -> None:
    owner, admin = await setup(relay)
    server, _ = txt_server
    async with admin:
        application = await apply(owner, "shop.example")
        target = f"/v1/admin/businesses/{owner.account_id}/verification/check-domain"
        r = await admin.post(target, json={"method": "dns"})
        assert r.json()["ok"] is False and "no DNS name" in r.json()["detail"]
        server.records["_tresen-verification.shop.example"] = ["v=spf1 -all"]
        r = await admin.post(target, json={"method": "dns"})
        assert r.json()["ok"] is False and "none is" in r.json()["detail"]
        server.records["_tresen-verification.shop.example"].append(application["proof_dns_value"])
        r = await admin.post(target, json={"method": "any"})  # https fails first, then DNS
        assert r.json()["ok"] is True and r.json()["method"] == "dns"
        error(await admin.post(target, json={"method": "smoke"}), 400, Code.BAD_REQUEST)


@pytest.mark.parametrize(
    "domain", ["localhost", "no spaces.example", "-bad.example", "10.0.0.1", "a..example"]
)
async def test_bad_domains_are_refused(relay: Harness, domain: str) -> None:
    owner, admin = await setup(relay)
    await admin.aclose()
    r = await owner.http.post(
        "/v1/business/verification",
        json={"legal_name": "Vineyard GmbH", "registration_number": "1", "domain": domain},
    )
    error(r, 400, Code.INVALID_DOMAIN)
    error(await owner.http.get("/v1/business/verification"), 404, Code.NOT_FOUND)


async def test_person_cannot_apply(relay: Harness) -> None:
    person = await relay.new_device()
    r = await person.http.post(
        "/v1/business/verification",
        json={"legal_name": "Nobody", "registration_number": "1", "domain": "x.example"},
    )
    error(r, 404, Code.NOT_A_BUSINESS)


async def test_decisions_reach_the_business_devices_and_the_gates(relay: Harness) -> None:
    from tresen.bus.events import PolicyChanged

    seen: list[PolicyChanged] = []

    def on_event(event: object) -> None:
        if isinstance(event, PolicyChanged):
            seen.append(event)

    relay.services.bus.subscribe("relay", on_event)
    owner, admin = await setup(relay)
    linked = await relay.link_device(owner)
    async with admin:
        await apply(owner)
        target = f"/v1/admin/businesses/{owner.account_id}"
        await admin.post(f"{target}/verification/approve", json={"note": "internal only"})
        await admin.post(f"{target}/display-name/reject", json={"reason": "too generic"})
    for device in (owner, linked):
        notices = [
            json.loads(item.body)
            for item in await relay.fetch_queue(device.device_id)
            if item.kind == "notice"
        ]
        assert notices == [
            {
                "type": "business_review",
                "subject": "verification",
                "status": "approved",
                "reason": None,
                "verified": False,
            },
            {
                "type": "business_review",
                "subject": "display_name",
                "status": "rejected",
                "reason": "too generic",
                "verified": False,
            },
        ]
    # the internal note is not shown to the business
    assert (await owner.http.get("/v1/business/verification")).json()["reason"] is None
    await owner.http.patch("/v1/business", json={"display_name": "Renamed Vineyard"})
    await asyncio.sleep(0)  # the in-process bus delivers on the loop
    mine = [(e.what, e.a) for e in seen if e.a == owner.account_id]
    assert mine == [("business", owner.account_id)] + [("standing", owner.account_id)] * 3
