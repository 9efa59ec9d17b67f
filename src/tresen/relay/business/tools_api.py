"""HTTP routes for the catalog and the small-business tools (under /v1/business)."""

from __future__ import annotations

from typing import Annotated

from litestar import delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.relay.accounts.models import Principal
from tresen.relay.business.models import (
    Label,
    LabelChats,
    LabelIn,
    Product,
    ProductCreate,
    ProductPage,
    ProductUpdate,
    QuickReply,
    QuickReplyIn,
)
from tresen.relay.business.tools import BusinessToolsService
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}
Tools = NamedDependency[BusinessToolsService]


# ---------------------------------------------------------------- catalog


@post("/products", dependencies=AUTH, status_code=201, summary="Add a product to your catalog")
async def create_product(
    who: NamedDependency[Principal], data: JSONBody[ProductCreate], business_tools: Tools
) -> Product:
    return await business_tools.do_create_product(who, data)


@patch("/products/{product_id:int}", dependencies=AUTH, summary="Change a product")
async def update_product(
    who: NamedDependency[Principal],
    product_id: FromPath[int],
    data: JSONBody[ProductUpdate],
    business_tools: Tools,
) -> Product:
    return await business_tools.do_update_product(who, product_id, data)


@delete("/products/{product_id:int}", dependencies=AUTH, summary="Remove a product")
async def delete_product(
    who: NamedDependency[Principal], product_id: FromPath[int], business_tools: Tools
) -> None:
    await business_tools.do_delete_product(who, product_id)


@get("/{account_id:int}/products", dependencies=AUTH, summary="A business's catalog, paged")
async def catalog(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    business_tools: Tools,
    after: Annotated[int | None, QueryParameter(ge=0)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    in_stock: Annotated[bool, QueryParameter()] = False,
) -> ProductPage:
    return await business_tools.access_catalog(
        account_id, after=after, limit=limit, in_stock_only=in_stock
    )


@get("/{account_id:int}/products/{product_id:int}", dependencies=AUTH, summary="One product")
async def product(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    product_id: FromPath[int],
    business_tools: Tools,
) -> Product:
    return await business_tools.access_product(account_id, product_id)


# ---------------------------------------------------------------- quick replies


@get("/quick-replies", dependencies=AUTH, summary="Your quick replies")
async def quick_replies(who: NamedDependency[Principal], business_tools: Tools) -> list[QuickReply]:
    return await business_tools.access_quick_replies(who)


@post("/quick-replies", dependencies=AUTH, status_code=201, summary="Add a quick reply")
async def create_quick_reply(
    who: NamedDependency[Principal], data: JSONBody[QuickReplyIn], business_tools: Tools
) -> QuickReply:
    return await business_tools.do_create_quick_reply(who, data)


@put("/quick-replies/{reply_id:int}", dependencies=AUTH, summary="Change a quick reply")
async def update_quick_reply(
    who: NamedDependency[Principal],
    reply_id: FromPath[int],
    data: JSONBody[QuickReplyIn],
    business_tools: Tools,
) -> QuickReply:
    return await business_tools.do_update_quick_reply(who, reply_id, data)


@delete("/quick-replies/{reply_id:int}", dependencies=AUTH, summary="Remove a quick reply")
async def delete_quick_reply(
    who: NamedDependency[Principal], reply_id: FromPath[int], business_tools: Tools
) -> None:
    await business_tools.do_delete_quick_reply(who, reply_id)


# ---------------------------------------------------------------- labels


@get("/labels", dependencies=AUTH, summary="Your labels with their chat counts")
async def labels(who: NamedDependency[Principal], business_tools: Tools) -> list[Label]:
    return await business_tools.access_labels(who)


@post("/labels", dependencies=AUTH, status_code=201, summary="Add a label")
async def create_label(
    who: NamedDependency[Principal], data: JSONBody[LabelIn], business_tools: Tools
) -> Label:
    return await business_tools.do_create_label(who, data)


@patch("/labels/{label_id:int}", dependencies=AUTH, summary="Rename or recolour a label")
async def update_label(
    who: NamedDependency[Principal],
    label_id: FromPath[int],
    data: JSONBody[LabelIn],
    business_tools: Tools,
) -> Label:
    return await business_tools.do_update_label(who, label_id, data)


@delete("/labels/{label_id:int}", dependencies=AUTH, summary="Remove a label from every chat")
async def delete_label(
    who: NamedDependency[Principal], label_id: FromPath[int], business_tools: Tools
) -> None:
    await business_tools.do_delete_label(who, label_id)


@get("/labels/{label_id:int}/chats", dependencies=AUTH, summary="Chats with a label, paged")
async def label_chats(
    who: NamedDependency[Principal],
    label_id: FromPath[int],
    business_tools: Tools,
    after: Annotated[int | None, QueryParameter(ge=0)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
) -> LabelChats:
    return await business_tools.access_label_chats(who, label_id, after=after, limit=limit)


@put(
    "/labels/{label_id:int}/chats/{chat:int}",
    dependencies=AUTH,
    status_code=204,
    summary="Put a label on a chat",
)
async def label_chat(
    who: NamedDependency[Principal],
    label_id: FromPath[int],
    chat: FromPath[int],
    business_tools: Tools,
) -> None:
    await business_tools.do_label_chat(who, label_id, chat, True)


@delete("/labels/{label_id:int}/chats/{chat:int}", dependencies=AUTH, summary="Take a label off")
async def unlabel_chat(
    who: NamedDependency[Principal],
    label_id: FromPath[int],
    chat: FromPath[int],
    business_tools: Tools,
) -> None:
    await business_tools.do_label_chat(who, label_id, chat, False)


@get("/chats/{chat:int}/labels", dependencies=AUTH, summary="The labels on one chat")
async def chat_labels(
    who: NamedDependency[Principal], chat: FromPath[int], business_tools: Tools
) -> list[int]:
    return await business_tools.access_chat_labels(who, chat)


TOOL_ROUTES = [
    create_product,
    update_product,
    delete_product,
    catalog,
    product,
    quick_replies,
    create_quick_reply,
    update_quick_reply,
    delete_quick_reply,
    labels,
    create_label,
    update_label,
    delete_label,
    label_chats,
    label_chat,
    unlabel_chat,
    chat_labels,
]
