"""Account rules: phone verification, devices and their limits, linking, profiles, presence.

``access_*`` fetch with a permission check, ``check_*`` validate, ``do_*`` change state and emit
events after the commit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec
import phonenumbers

from tresen.bus import Bus
from tresen.bus.events import DeviceRevoked, DevicesChanged
from tresen.config import Settings
from tresen.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Unauthorized,
)
from tresen.protocol.codes import Code
from tresen.relay.accounts import store
from tresen.relay.accounts.models import (
    CodeSent,
    Device,
    DeviceCredentials,
    LinkCode,
    Me,
    PresenceState,
    Principal,
    Profile,
    ProfileUpdate,
)
from tresen.relay.accounts.senders import CodeSender
from tresen.relay.clock import Clock
from tresen.relay.envelopes import store as queue_store
from tresen.relay.keys import store as key_store
from tresen.storage.engine import Database, Txn

HOUR_MS = 3_600_000
MAX_CODE_ATTEMPTS = 5


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _hash_code(scope: str, code: str) -> bytes:
    return hashlib.sha256(f"{scope}:{code}".encode()).digest()


def check_phone(raw: str) -> str:
    """Normalise to E.164 or raise ``invalid_phone_number``."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidRequest(
            f"{raw!r} is not a phone number: give it in international form, e.g. +4915123456789",
            code=Code.INVALID_PHONE_NUMBER,
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidRequest(f"{raw!r} is not a valid phone number", code=Code.INVALID_PHONE_NUMBER)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class DeviceDirectory:
    """Current devices per account, cached; dropped on every device change (any node)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.cache: dict[int, tuple[int, ...]] = {}

    async def devices_of(self, account_id: int) -> tuple[int, ...]:
        devices = self.cache.get(account_id)
        if devices is None:

            async def fetch(txn: Txn) -> list[int]:
                return await store.active_devices(txn, account_id)

            devices = tuple(await self.db.run_interaction("devices_of", fetch, write=False))
            if devices:
                self.cache[account_id] = devices
        return devices

    def forget(self, account_id: int) -> None:
        self.cache.pop(account_id, None)


class AccountService:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        settings: Settings,
        clock: Clock,
        sender: CodeSender,
        directory: DeviceDirectory,
    ) -> None:
        self.db, self.bus, self.settings, self.clock = db, bus, settings, clock
        self.sender = sender
        self.directory = directory

    # ------------------------------------------------------------ registration

    async def do_send_code(self, raw_phone: str, address: str) -> CodeSent:
        phone = check_phone(raw_phone)
        now = self.clock.now_ms()
        code = f"{secrets.randbelow(1_000_000):06d}"
        ttl = self.settings.code_ttl_seconds
        limits = (
            (f"code:number:{phone}", self.settings.code_attempts_per_number_per_hour),
            (f"code:address:{address}", self.settings.code_attempts_per_address_per_hour),
        )

        async def interaction(txn: Txn) -> None:
            for bucket, limit in limits:
                if await store.count_rate_events(txn, bucket, now - HOUR_MS) >= limit:
                    raise LimitExceeded(
                        "too many verification codes requested; wait before asking again",
                        retry_after=3600,
                    )
            for bucket, _ in limits:
                await store.add_rate_event(txn, bucket, now)
            await store.put_verification_code(txn, phone, _hash_code(phone, code), now + ttl * 1000)

        await self.db.run_interaction("send_code", interaction)
        await self.sender.send(phone, code)
        return CodeSent(phone=phone, expires_in=ttl)

    async def do_register(
        self, raw_phone: str, code: str, device_name: str, takeover: bool
    ) -> DeviceCredentials:
        phone = check_phone(raw_phone)
        now = self.clock.now_ms()
        token = "tdv_" + secrets.token_urlsafe(32)

        async def verify(txn: Txn) -> Unauthorized | None:
            # returns rather than raises, so that counting a wrong attempt is committed
            row = await store.get_verification_code(txn, phone)
            if row is None:
                return Unauthorized(
                    "no code is pending for this number: request one first",
                    code=Code.INVALID_CODE,
                )
            code_hash, expires_at, attempts = bytes(row[0]), int(row[1]), int(row[2])
            if expires_at < now:
                await store.delete_verification_code(txn, phone)
                return Unauthorized("the code expired: request a new one", code=Code.CODE_EXPIRED)
            if attempts >= MAX_CODE_ATTEMPTS:
                await store.delete_verification_code(txn, phone)
                return Unauthorized(
                    "too many wrong codes: request a new one", code=Code.INVALID_CODE
                )
            if not hmac.compare_digest(code_hash, _hash_code(phone, code)):
                await store.count_code_attempt(txn, phone)
                return Unauthorized("wrong code", code=Code.INVALID_CODE)
            return None

        failure = await self.db.run_interaction("verify_code", verify)
        if failure is not None:
            raise failure

        async def register(txn: Txn) -> tuple[int, int, list[int]]:
            # consume the code in the same transaction that creates the device: single use
            if await store.get_verification_code(txn, phone) is None:
                raise Unauthorized("the code was already used", code=Code.INVALID_CODE)
            await store.delete_verification_code(txn, phone)
            account_id = await store.account_by_phone(txn, phone)
            revoked: list[int] = []
            if account_id is None:
                account_id = await store.create_account(txn, phone, now)
            elif not takeover:
                raise Conflict(
                    "an account with this number exists: register with takeover=true to move it "
                    "to this device (its other devices are signed out), or link this device "
                    "from one of them",
                    code=Code.ACCOUNT_EXISTS,
                )
            else:
                revoked = await store.revoke_all_devices(txn, account_id, now)
                for device in revoked:
                    await queue_store.drop_device(txn, device)
                    await key_store.drop_device(txn, device)
            device_id = await store.create_device(
                txn, account_id, device_name, hash_token(token), now
            )
            return account_id, device_id, revoked

        account_id, device_id, revoked = await self.db.run_interaction("register", register)
        self._devices_changed(account_id, revoked)
        return DeviceCredentials(account_id, device_id, token, phone)

    # ------------------------------------------------------------ authentication

    async def access_principal(self, token: str) -> Principal:
        token_hash = hash_token(token)

        async def lookup(txn: Txn) -> tuple[int, int] | None:
            return await store.principal_by_token(txn, token_hash)

        found = await self.db.run_interaction("principal_by_token", lookup, write=False)
        if found is None:
            revoked = await self.db.run_interaction(
                "is_revoked_token", lambda txn: store.is_revoked_token(txn, token_hash), write=False
            )
            if revoked:
                raise Unauthorized("this device was signed out", code=Code.TOKEN_REVOKED)
            raise Unauthorized("unknown or missing access token")
        return Principal(*found)

    # ------------------------------------------------------------ devices

    async def do_create_link_code(self, who: Principal) -> LinkCode:
        code = secrets.token_hex(4).upper()
        ttl = self.settings.link_code_ttl_seconds
        expires = self.clock.now_ms() + ttl * 1000
        await self.db.run_interaction(
            "create_link_code",
            lambda txn: store.put_link_code(txn, _hash_code("link", code), who.account_id, expires),
        )
        return LinkCode(code=code, expires_in=ttl)

    async def do_link_device(self, code: str, device_name: str) -> DeviceCredentials:
        now = self.clock.now_ms()
        token = "tdv_" + secrets.token_urlsafe(32)

        async def link(txn: Txn) -> tuple[int, int, str] | Unauthorized:
            # the code is consumed even when expired: an expired code is never tried twice
            row = await store.take_link_code(txn, _hash_code("link", code.strip().upper()))
            if row is None:
                return Unauthorized("unknown or used link code", code=Code.INVALID_CODE)
            account_id, expires_at = int(row[0]), int(row[1])
            if expires_at < now:
                return Unauthorized("the link code expired: show a new one", code=Code.CODE_EXPIRED)
            devices = await store.active_devices(txn, account_id)
            if len(devices) >= self.settings.max_devices:
                raise Conflict(
                    f"this account has {len(devices)} devices, the most allowed: "
                    "remove one before linking another",
                    code=Code.DEVICE_LIMIT,
                )
            device_id = await store.create_device(
                txn, account_id, device_name, hash_token(token), now
            )
            me = await store.get_me(txn, account_id, device_id)
            assert me is not None
            return account_id, device_id, me.phone

        linked = await self.db.run_interaction("link_device", link)
        if isinstance(linked, Unauthorized):
            raise linked
        account_id, device_id, phone = linked
        self._devices_changed(account_id, [])
        return DeviceCredentials(account_id, device_id, token, phone)

    async def access_devices(self, who: Principal) -> list[Device]:
        devices = await self.db.run_interaction(
            "list_devices", lambda txn: store.list_devices(txn, who.account_id), write=False
        )
        for device in devices:
            device.current = device.device_id == who.device_id
        return devices

    async def do_revoke_device(self, who: Principal, device_id: int) -> None:
        now = self.clock.now_ms()

        async def revoke(txn: Txn) -> None:
            if not await store.revoke_device(txn, who.account_id, device_id, now):
                raise NotFound(f"no device {device_id} on this account")
            await queue_store.drop_device(txn, device_id)
            await key_store.drop_device(txn, device_id)

        await self.db.run_interaction("revoke_device", revoke)
        self._devices_changed(who.account_id, [device_id])

    def _devices_changed(self, account_id: int, revoked: list[int]) -> None:
        self.directory.forget(account_id)
        self.bus.publish("relay", DevicesChanged(account=account_id))
        for device in revoked:
            self.bus.publish(f"device.{device}", DeviceRevoked(device=device))

    async def do_touch(self, who: Principal) -> None:
        now = self.clock.now_ms()
        await self.db.run_interaction(
            "touch_device", lambda txn: store.touch_device(txn, who.device_id, who.account_id, now)
        )

    async def do_mark_seen(self, account_ids: list[int], at: int) -> None:
        """Accounts that went offline without a disconnect (their node died) were last seen
        about ``at``."""
        await self.db.run_interaction(
            "mark_seen", lambda txn: store.mark_seen(txn, account_ids, at)
        )

    # ------------------------------------------------------------ profiles and contacts

    async def access_me(self, who: Principal) -> Me:
        me = await self.db.run_interaction(
            "get_me", lambda txn: store.get_me(txn, who.account_id, who.device_id), write=False
        )
        if me is None:
            raise NotFound("account not found")
        return me

    async def access_profile(self, account_id: int) -> Profile:
        profile = await self.db.run_interaction(
            "get_profile", lambda txn: store.get_profile(txn, account_id), write=False
        )
        if profile is None:
            raise NotFound(f"no account {account_id}", code=Code.UNKNOWN_RECIPIENT)
        return profile

    async def access_lookup(self, phone: str | None, username: str | None) -> Profile:
        if (phone is None) == (username is None):
            raise InvalidRequest("give exactly one of phone or username")

        async def find(txn: Txn) -> int | None:
            if phone is not None:
                return await store.account_by_phone(txn, check_phone(phone))
            return await store.account_by_username(txn, (username or "").lower())

        account_id = await self.db.run_interaction("lookup_account", find, write=False)
        if account_id is None:
            raise NotFound("no account with that number or username", code=Code.UNKNOWN_RECIPIENT)
        return await self.access_profile(account_id)

    async def do_update_profile(self, who: Principal, update: ProfileUpdate) -> Me:
        changes = {
            f.name: getattr(update, f.name)
            for f in msgspec.structs.fields(update)
            if getattr(update, f.name) is not msgspec.UNSET
        }

        async def apply(txn: Txn) -> None:
            username = changes.get("username")
            if username is not None:
                owner = await store.account_by_username(txn, username)
                if owner is not None and owner != who.account_id:
                    raise Conflict(f"username {username!r} is taken", code=Code.USERNAME_TAKEN)
            for column, value in changes.items():
                await store.update_account(txn, who.account_id, column, value)

        await self.db.run_interaction("update_profile", apply)
        return await self.access_me(who)

    async def do_set_contacts(self, who: Principal, contacts: list[int]) -> list[int]:
        async def apply(txn: Txn) -> list[int]:
            await store.set_contacts(txn, who.account_id, contacts)
            return await store.get_contacts(txn, who.account_id)

        return await self.db.run_interaction("set_contacts", apply)

    async def access_contacts(self, who: Principal) -> list[int]:
        return await self.db.run_interaction(
            "get_contacts", lambda txn: store.get_contacts(txn, who.account_id), write=False
        )

    async def check_presence_visible(self, viewer: int, account_id: int) -> tuple[bool, int | None]:
        """Whether ``viewer`` may see ``account_id``'s presence, and its stored last-seen."""

        async def read(txn: Txn) -> tuple[bool, int | None]:
            row = await store.presence_row(txn, account_id)
            if row is None:
                raise NotFound(f"no account {account_id}", code=Code.UNKNOWN_RECIPIENT)
            privacy, last_seen = row[0], row[1]
            if viewer == account_id or privacy == "everyone":
                return True, last_seen
            if privacy == "contacts":
                return await store.has_contact(txn, account_id, viewer), last_seen
            return False, None

        return await self.db.run_interaction("presence_visible", read, write=False)

    async def access_presence(self, who: Principal, account_id: int, online: bool) -> PresenceState:
        visible, last_seen = await self.check_presence_visible(who.account_id, account_id)
        if not visible:
            raise Forbidden("this person does not share their presence with you")
        return PresenceState(account_id=account_id, online=online, last_seen=last_seen)
