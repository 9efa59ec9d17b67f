"""The operator's admin API against a real relay: admin tokens are separate from device tokens,
every admin action lands in the audit log inside the same transaction, and the log reads back
newest first with paging and filters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tresen.protocol.codes import Code
from tresen.relay.admin import audit
from tresen.relay.admin.models import AdminPrincipal
from tresen.storage.engine import Txn

from ..conftest import Harness

CONSOLE = AdminPrincipal(admin_id=None, name="test-console")


def error(response: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code
    return body


async def admin_client(relay: Harness, name: str = "ops") -> tuple[httpx.AsyncClient, int]:
    created = await relay.services.admins.do_create_token(CONSOLE, name)
    return relay.client(created.token), created.id


async def test_no_token_is_401_and_device_token_is_403(relay: Harness) -> None:
    person = await relay.new_device()
    async with relay.client() as anonymous:
        error(await anonymous.get("/v1/admin/audit"), 401, Code.UNAUTHORIZED)
    error(await person.http.get("/v1/admin/audit"), 403, Code.ADMIN_REQUIRED)
    error(await person.http.get("/v1/admin/businesses"), 403, Code.ADMIN_REQUIRED)
    async with relay.client("tad_not-a-real-token") as wrong:
        error(await wrong.get("/v1/admin/whoami"), 401, Code.UNAUTHORIZED)


async def test_admin_token_is_not_a_device_token(relay: Harness) -> None:
    admin, _ = await admin_client(relay)
    async with admin:
        r = await admin.get("/v1/admin/whoami")
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "ops"
        # the admin token opens no user route
        error(await admin.get("/v1/me"), 401, Code.UNAUTHORIZED)


async def test_token_lifecycle_is_audited(relay: Harness) -> None:
    admin, first_id = await admin_client(relay, "alice")
    async with admin:
        r = await admin.post("/v1/admin/tokens", json={"name": "bob"})
        assert r.status_code == 201, r.text
        bob = r.json()
        assert bob["token"].startswith("tad_")
        listed = (await admin.get("/v1/admin/tokens")).json()
        assert [t["name"] for t in listed] == ["alice", "bob"]
        # use is recorded (at most once a minute), never for a token not yet used
        assert listed[0]["last_used_at"] is not None and listed[1]["last_used_at"] is None
        assert all("token" not in t for t in listed)
        async with relay.client(bob["token"]) as as_bob:
            assert (await as_bob.get("/v1/admin/whoami")).json()["name"] == "bob"
            r = await admin.delete(f"/v1/admin/tokens/{bob['id']}")
            assert r.status_code == 204, r.text
            error(await as_bob.get("/v1/admin/whoami"), 401, Code.TOKEN_REVOKED)
        error(await admin.delete(f"/v1/admin/tokens/{bob['id']}"), 404, Code.NOT_FOUND)
        page = (await admin.get("/v1/admin/audit")).json()
        actions = [(e["action"], e["admin_name"], e["target"]) for e in page["items"]]
        assert actions == [
            ("admin.token.revoke", "alice", f"admin:{bob['id']}"),
            ("admin.token.create", "alice", f"admin:{bob['id']}"),
            ("admin.token.create", "test-console", f"admin:{first_id}"),
        ]
        assert page["items"][1]["detail"] == {"name": "bob"}
        assert page["items"][1]["admin_id"] == first_id
        assert page["next"] is None


async def test_bad_admin_input_is_refused(relay: Harness) -> None:
    admin, _ = await admin_client(relay)
    async with admin:
        error(await admin.post("/v1/admin/tokens", json={"name": ""}), 400, Code.BAD_REQUEST)
        error(
            await admin.post("/v1/admin/tokens", json={"name": "x", "extra": 1}),
            400,
            Code.BAD_REQUEST,
        )
        error(await admin.get("/v1/admin/audit?limit=0"), 400, Code.BAD_REQUEST)
        assert len((await admin.get("/v1/admin/tokens")).json()) == 1


async def test_audit_paging_and_filters(relay: Harness) -> None:
    admin, _ = await admin_client(relay)

    async def write(txn: Txn) -> None:
        for i in range(7):
            await audit.record(txn, CONSOLE, f"test.{i % 2}", f"thing:{i}", {"i": i})

    await relay.services.db.run_interaction("test_audit", write)
    async with admin:
        seen: list[int] = []
        before: int | None = None
        while True:
            query = "/v1/admin/audit?limit=3" + (f"&before={before}" if before else "")
            page = (await admin.get(query)).json()
            seen += [e["detail"].get("i", -1) for e in page["items"]]
            before = page["next"]
            if before is None:
                break
        assert seen == [6, 5, 4, 3, 2, 1, 0, -1]  # -1: the token creation
        odd = (await admin.get("/v1/admin/audit?action=test.1")).json()["items"]
        assert [e["detail"]["i"] for e in odd] == [5, 3, 1]
        one = (await admin.get("/v1/admin/audit?target=thing:4")).json()["items"]
        assert [e["action"] for e in one] == ["test.0"]


async def test_audit_row_rolls_back_with_the_action(relay: Harness) -> None:
    class Boom(Exception):
        pass

    async def fail(txn: Txn) -> None:
        await audit.record(txn, CONSOLE, "test.rolled_back", "thing:1", {})
        raise Boom

    with pytest.raises(Boom):
        await relay.services.db.run_interaction("test_audit_rollback", fail)
    page = await relay.services.admins.access_audit(
        before=None, action="test.rolled_back", target=None, limit=10
    )
    assert page.items == []
