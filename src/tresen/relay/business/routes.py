"""Everything issue 4 part A adds to the HTTP app: routers and the services they depend on.

The composition root registers these in one Router so the shared ``app.py`` stays small.
"""

from __future__ import annotations

from litestar import Router

from tresen.relay.admin.api import router as admin_router
from tresen.relay.business.admin_api import router as business_admin_router
from tresen.relay.business.api import router as business_router
from tresen.relay.business.api import short_link_router

ROUTERS: list[Router] = [admin_router, business_admin_router, business_router, short_link_router]
#: names of the ``Services`` fields these routes take as dependencies
SERVICES = ("admins", "business", "business_review", "business_tools")
