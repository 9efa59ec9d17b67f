"""End-to-end encryption on the device: Olm/Megolm by vodozemac in Matrix's formats.

- :mod:`.signing` canonical JSON, signed device keys and one-time keys
- :mod:`.account` the device's Olm account and what it publishes
- :mod:`.olm` Olm sessions per peer device (pre-key routing with ``session_matches``)
- :mod:`.megolm` group sessions, rotation, replay checks
- :mod:`.events` the Matrix event shapes in an envelope and the plaintext checks
- :mod:`.devices` the device book: checked keys, verification, device changes
- :mod:`.verification` SAS with emoji and decimals
- :mod:`.store` the encrypted on-disk state; :mod:`.machine` all of it without I/O
"""

from tresen.client.crypto.account import OlmAccount
from tresen.client.crypto.devices import DeviceChange, TrackedDevice
from tresen.client.crypto.machine import CryptoMachine
from tresen.client.crypto.signing import DeviceIdentity
from tresen.client.crypto.store import CryptoStore, create_key_file, read_key_file
from tresen.client.crypto.verification import SasVerification

__all__ = [
    "CryptoMachine",
    "CryptoStore",
    "DeviceChange",
    "DeviceIdentity",
    "OlmAccount",
    "SasVerification",
    "TrackedDevice",
    "create_key_file",
    "read_key_file",
]
