"""With ``verification_requires_domain_proof`` on, approval waits for a passed domain proof."""

from __future__ import annotations

from typing import Any

import pytest

from tresen.protocol.codes import Code

from ..conftest import Harness
from .test_business_verification import CONSOLE, ProofServer, apply


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"domain_proof_allow_loopback_http": True, "verification_requires_domain_proof": True}


async def test_approval_needs_a_passed_proof(relay: Harness) -> None:
    server = ProofServer()
    try:
        owner = await relay.new_device()
        r = await owner.http.post("/v1/business", json={"display_name": "Proof First"})
        assert r.status_code == 201
        token = (await relay.services.admins.do_create_token(CONSOLE, "ops")).token
        application = await apply(owner, server.domain)
        async with relay.client(token) as admin:
            base = f"/v1/admin/businesses/{owner.account_id}/verification"
            r = await admin.post(f"{base}/approve", json={})
            assert r.status_code == 409
            assert r.json()["error"]["code"] == Code.DOMAIN_PROOF_REQUIRED
            server.body = application["proof_token"].encode()
            assert (await admin.post(f"{base}/check-domain", json={})).json()["ok"] is True
            r = await admin.post(f"{base}/approve", json={})
            assert r.status_code == 200, r.text
            assert r.json()["verification"]["status"] == "approved"
    finally:
        server.close()
