"""The crypto machine's exception hierarchy.

Every error the machine raises on purpose derives from `CryptoError` (itself a `NimbusError`). Messages
name what was wrong and never include key material or plaintext. `DecryptionError.cause` is a
`DecryptionCause`, for the timeline to show why an event could not be read.
"""

from __future__ import annotations

import enum

from nimbus.types.errors import NimbusError


class CryptoError(NimbusError):
    """Base class of every error the crypto machine raises on purpose."""


class StoreDataError(CryptoError):
    """A stored crypto record cannot be read back (wrong pickle key, corrupt record)."""


class NotShared(CryptoError):
    """encrypt_room_event was called before share_room_key prepared a usable session for the room."""


class UnknownRequest(CryptoError):
    """mark_request_as_sent got a request id the machine does not know."""


class DecryptionCause(enum.StrEnum):
    """Why an event could not be decrypted (spec: E2EE module, "Messaging algorithms")."""

    NO_SESSION = "no_session"
    WITHHELD = "withheld"
    UNKNOWN_INDEX = "unknown_index"
    REPLAY = "replay"
    ROOM_MISMATCH = "room_mismatch"
    BAD_CIPHERTEXT = "bad_ciphertext"
    MALFORMED = "malformed"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    SENDER_MISMATCH = "sender_mismatch"
    UNVERIFIED_SENDER = "unverified_sender"


class DecryptionError(CryptoError):
    """A room event could not be decrypted; `cause` says why. `code`/`reason` come from a withheld notice."""

    def __init__(
        self, cause: DecryptionCause, detail: str, *, code: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(f"{cause.value}: {detail}")
        self.cause = cause
        self.detail = detail
        self.code = code
        self.reason = reason


class ToDeviceCause(enum.StrEnum):
    """Why a to-device event was ignored or not decrypted (reported in ToDeviceResult)."""

    MALFORMED = "malformed"
    NOT_FOR_US = "not_for_us"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    DUPLICATE = "duplicate"
    WEDGED = "wedged"
    BAD_PAYLOAD = "bad_payload"
    UNENCRYPTED_ROOM_KEY = "unencrypted_room_key"
    FORWARDED_KEY_IGNORED = "forwarded_key_ignored"
    KEY_REQUEST_REFUSED = "key_request_refused"
    BAD_ROOM_KEY = "bad_room_key"
