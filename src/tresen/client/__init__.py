"""The tresen SDK: everything that holds keys is a client built on it.

``AsyncDevice`` (and its blocking twin ``Device``) registers or links a device, talks to the
relay's HTTP API and keeps the live connection; payloads are opaque bytes at this layer.
``SecureDevice`` adds end-to-end encryption on top (docs/encryption.md).
"""

from tresen.client.api import RelayAPI
from tresen.client.connection import Connection, new_envelope_id
from tresen.client.device import AsyncDevice, Credentials
from tresen.client.secure import SecureDevice
from tresen.client.sync import Device

__all__ = [
    "AsyncDevice",
    "Connection",
    "Credentials",
    "Device",
    "RelayAPI",
    "SecureDevice",
    "new_envelope_id",
]
