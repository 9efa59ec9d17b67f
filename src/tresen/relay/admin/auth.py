"""The admin principal dependency: admin bearer tokens, never device tokens.

Routes declare ``dependencies=ADMIN`` and take ``admin: NamedDependency[AdminPrincipal]``.
No token answers 401 ``unauthorized``; a device (user) token 403 ``admin_required``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.admin.service import AdminService
from tresen.relay.transport.http import bearer


async def provide_admin(
    request: Request[Any, Any, Any], admins: NamedDependency[AdminService]
) -> AdminPrincipal:
    """Dependency ``admin``: the operator behind the admin bearer token."""
    return await admins.access_admin(bearer(request))


#: ``@get(..., dependencies=ADMIN)`` on every admin route
ADMIN = {"admin": Provide(provide_admin)}

__all__ = ["ADMIN", "AdminPrincipal", "provide_admin"]
