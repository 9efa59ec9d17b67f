"""The catalog and the small-business tools (quick replies, labels on chats), stored on the
relay for all of a business's devices. Only the business's own account may change them."""

from __future__ import annotations

import msgspec

from tresen.errors import Conflict, NotFound
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.business import rules, store
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
from tresen.relay.business.service import BusinessService, not_a_business
from tresen.storage.engine import Txn

MAX_PAGE = 200
PRODUCT = Code.INVALID_PRODUCT  # the code for a catalog field out of bounds


def _too_many(what: str, limit: int) -> Conflict:
    return Conflict(
        f"a business may have at most {limit} {what}", code=Code.BUSINESS_LIMIT, limit=limit
    )


class BusinessToolsService:
    def __init__(self, businesses: BusinessService) -> None:
        self.db, self.clock = businesses.db, businesses.clock

    async def _own(self, txn: Txn, who: Principal) -> int:
        if await store.get_business(txn, who.account_id) is None:
            raise not_a_business(who.account_id)
        return who.account_id

    # ------------------------------------------------------------ catalog

    async def do_create_product(self, who: Principal, data: ProductCreate) -> Product:
        price, currency = rules.check_price(data.price, data.currency)
        now = self.clock.now_ms()
        product = Product(
            id=0,
            business_id=who.account_id,
            retailer_id=data.retailer_id,
            name=rules.check_text(
                "name", data.name, rules.MAX_PRODUCT_NAME, required=True, code=PRODUCT
            ),
            description=rules.check_text(
                "description", data.description, rules.MAX_PRODUCT_DESCRIPTION, code=PRODUCT
            ),
            price=price,
            currency=currency,
            image=data.image,
            availability=data.availability,
            created_at=now,
            updated_at=now,
        )

        async def create(txn: Txn) -> Product:
            await self._own(txn, who)
            if await store.count_products(txn, who.account_id) >= rules.MAX_PRODUCTS:
                raise _too_many("products", rules.MAX_PRODUCTS)
            if product.retailer_id is not None and await store.retailer_id_taken(
                txn, who.account_id, product.retailer_id, 0
            ):
                raise Conflict(
                    f"retailer id {product.retailer_id!r} is already in the catalog",
                    code=Code.PRODUCT_EXISTS,
                )
            product_id = await store.insert_product(txn, product)
            if product_id is None:  # a concurrent add took the retailer id
                raise Conflict(
                    f"retailer id {product.retailer_id!r} is already in the catalog",
                    code=Code.PRODUCT_EXISTS,
                )
            product.id = product_id
            return product

        return await self.db.run_interaction("create_product", create)

    async def do_update_product(
        self, who: Principal, product_id: int, data: ProductUpdate
    ) -> Product:
        now = self.clock.now_ms()

        async def update(txn: Txn) -> Product:
            await self._own(txn, who)
            product = await store.get_product(txn, who.account_id, product_id)
            if product is None:
                raise NotFound(f"no product {product_id} in this catalog")
            changes = {
                f: v for f, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET
            }
            new = msgspec.structs.replace(product, **changes, updated_at=now)
            new.name = rules.check_text(
                "name", new.name, rules.MAX_PRODUCT_NAME, required=True, code=PRODUCT
            )
            new.description = rules.check_text(
                "description", new.description, rules.MAX_PRODUCT_DESCRIPTION, code=PRODUCT
            )
            new.price, new.currency = rules.check_price(new.price, new.currency)
            if new.retailer_id is not None and await store.retailer_id_taken(
                txn, who.account_id, new.retailer_id, product_id
            ):
                raise Conflict(
                    f"retailer id {new.retailer_id!r} is already in the catalog",
                    code=Code.PRODUCT_EXISTS,
                )
            await store.save_product(txn, new)
            return new

        return await self.db.run_interaction("update_product", update)

    async def do_delete_product(self, who: Principal, product_id: int) -> None:
        async def delete(txn: Txn) -> None:
            await self._own(txn, who)
            if not await store.delete_product(txn, who.account_id, product_id):
                raise NotFound(f"no product {product_id} in this catalog")

        await self.db.run_interaction("delete_product", delete)

    async def access_product(self, business_id: int, product_id: int) -> Product:
        async def read(txn: Txn) -> Product:
            if await store.get_business(txn, business_id) is None:
                raise not_a_business(business_id)
            product = await store.get_product(txn, business_id, product_id)
            if product is None:
                raise NotFound(f"no product {product_id} in this catalog")
            return product

        return await self.db.run_interaction("get_product", read, write=False)

    async def access_catalog(
        self, business_id: int, *, after: int | None, limit: int, in_stock_only: bool
    ) -> ProductPage:
        limit = max(1, min(limit, MAX_PAGE))

        async def read(txn: Txn) -> ProductPage:
            if await store.get_business(txn, business_id) is None:
                raise not_a_business(business_id)
            items = await store.list_products(
                txn, business_id, after=after, limit=limit + 1, in_stock_only=in_stock_only
            )
            more = len(items) > limit
            items = items[:limit]
            return ProductPage(items=items, next=items[-1].id if more else None)

        return await self.db.run_interaction("catalog", read, write=False)

    # ------------------------------------------------------------ quick replies

    async def do_create_quick_reply(self, who: Principal, data: QuickReplyIn) -> QuickReply:
        shortcut, text = self._check_quick_reply(data)
        now = self.clock.now_ms()

        async def create(txn: Txn) -> QuickReply:
            await self._own(txn, who)
            if await store.count_quick_replies(txn, who.account_id) >= rules.MAX_QUICK_REPLIES:
                raise _too_many("quick replies", rules.MAX_QUICK_REPLIES)
            if await store.quick_reply_by_shortcut(txn, who.account_id, shortcut) is not None:
                raise Conflict(
                    f"the shortcut /{shortcut} is already used", code=Code.QUICK_REPLY_EXISTS
                )
            created = await store.insert_quick_reply(txn, who.account_id, shortcut, text, now)
            if created is None:  # a concurrent add took the shortcut
                raise Conflict(
                    f"the shortcut /{shortcut} is already used", code=Code.QUICK_REPLY_EXISTS
                )
            return created

        return await self.db.run_interaction("create_quick_reply", create)

    def _check_quick_reply(self, data: QuickReplyIn) -> tuple[str, str]:
        shortcut = rules.check_shortcut(data.shortcut)
        text = rules.check_text("text", data.text, rules.MAX_MESSAGE_TEXT, required=True)
        return shortcut, text

    async def do_update_quick_reply(
        self, who: Principal, reply_id: int, data: QuickReplyIn
    ) -> QuickReply:
        shortcut, text = self._check_quick_reply(data)
        now = self.clock.now_ms()

        async def update(txn: Txn) -> QuickReply:
            await self._own(txn, who)
            holder = await store.quick_reply_by_shortcut(txn, who.account_id, shortcut)
            if holder is not None and holder != reply_id:
                raise Conflict(
                    f"the shortcut /{shortcut} is already used", code=Code.QUICK_REPLY_EXISTS
                )
            saved = await store.update_quick_reply(
                txn, who.account_id, reply_id, shortcut, text, now
            )
            if saved is None:
                raise NotFound(f"no quick reply {reply_id}")
            return saved

        return await self.db.run_interaction("update_quick_reply", update)

    async def do_delete_quick_reply(self, who: Principal, reply_id: int) -> None:
        async def delete(txn: Txn) -> None:
            await self._own(txn, who)
            if not await store.delete_quick_reply(txn, who.account_id, reply_id):
                raise NotFound(f"no quick reply {reply_id}")

        await self.db.run_interaction("delete_quick_reply", delete)

    async def access_quick_replies(self, who: Principal) -> list[QuickReply]:
        async def read(txn: Txn) -> list[QuickReply]:
            return await store.list_quick_replies(txn, await self._own(txn, who))

        return await self.db.run_interaction("quick_replies", read, write=False)

    # ------------------------------------------------------------ labels

    def _check_label(self, data: LabelIn) -> tuple[str, str]:
        name = rules.check_text("name", data.name, rules.MAX_LABEL_NAME, required=True)
        return name, rules.check_color(data.color)

    async def do_create_label(self, who: Principal, data: LabelIn) -> Label:
        name, color = self._check_label(data)
        now = self.clock.now_ms()

        async def create(txn: Txn) -> Label:
            await self._own(txn, who)
            if await store.count_labels(txn, who.account_id) >= rules.MAX_LABELS:
                raise _too_many("labels", rules.MAX_LABELS)
            if await store.label_by_name(txn, who.account_id, name) is not None:
                raise Conflict(f"a label named {name!r} exists", code=Code.LABEL_EXISTS)
            lid = await store.insert_label(txn, who.account_id, name, color, now)
            if lid is None:  # a concurrent add took the name
                raise Conflict(f"a label named {name!r} exists", code=Code.LABEL_EXISTS)
            return Label(id=lid, name=name, color=color, chats=0, created_at=now)

        return await self.db.run_interaction("create_label", create)

    async def do_update_label(self, who: Principal, label_id: int, data: LabelIn) -> Label:
        name, color = self._check_label(data)

        async def update(txn: Txn) -> Label:
            await self._own(txn, who)
            holder = await store.label_by_name(txn, who.account_id, name)
            if holder is not None and holder != label_id:
                raise Conflict(f"a label named {name!r} exists", code=Code.LABEL_EXISTS)
            if not await store.update_label(txn, who.account_id, label_id, name, color):
                raise NotFound(f"no label {label_id}")
            return (await store.list_labels(txn, who.account_id, label_id))[0]

        return await self.db.run_interaction("update_label", update)

    async def do_delete_label(self, who: Principal, label_id: int) -> None:
        async def delete(txn: Txn) -> None:
            await self._own(txn, who)
            if not await store.delete_label(txn, who.account_id, label_id):
                raise NotFound(f"no label {label_id}")

        await self.db.run_interaction("delete_label", delete)

    async def access_labels(self, who: Principal) -> list[Label]:
        async def read(txn: Txn) -> list[Label]:
            return await store.list_labels(txn, await self._own(txn, who))

        return await self.db.run_interaction("labels", read, write=False)

    async def do_label_chat(self, who: Principal, label_id: int, chat: int, on: bool) -> None:
        now = self.clock.now_ms()

        async def label(txn: Txn) -> None:
            await self._own(txn, who)
            if not await store.label_exists(txn, who.account_id, label_id):
                raise NotFound(f"no label {label_id}")
            if on:
                if await store.phone_of(txn, chat) is None:
                    raise NotFound(f"no account {chat}", code=Code.UNKNOWN_RECIPIENT)
                await store.assign_label(txn, label_id, chat, now)
            elif not await store.unassign_label(txn, label_id, chat):
                raise NotFound(f"chat {chat} does not carry label {label_id}")

        await self.db.run_interaction("label_chat", label)

    async def access_label_chats(
        self, who: Principal, label_id: int, *, after: int | None, limit: int
    ) -> LabelChats:
        limit = max(1, min(limit, 1000))

        async def read(txn: Txn) -> LabelChats:
            await self._own(txn, who)
            if not await store.label_exists(txn, who.account_id, label_id):
                raise NotFound(f"no label {label_id}")
            chats = await store.chats_with_label(txn, label_id, after=after, limit=limit)
            return LabelChats(label_id=label_id, chats=chats)

        return await self.db.run_interaction("label_chats", read, write=False)

    async def access_chat_labels(self, who: Principal, chat: int) -> list[int]:
        async def read(txn: Txn) -> list[int]:
            return await store.labels_of_chat(txn, await self._own(txn, who), chat)

        return await self.db.run_interaction("chat_labels", read, write=False)
