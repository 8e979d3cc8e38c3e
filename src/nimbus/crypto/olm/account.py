"""The device's Olm account: identity keys, signed device keys, one-time and fallback keys.

Spec: https://spec.matrix.org/v1.12/client-server-api/#device-keys, #one-time-and-fallback-keys,
POST /keys/upload. Rules ("nothing lost, nothing reused"):
- keys are generated and the account pickle is put in the change set BEFORE the upload request exists;
- the upload request is recomputed from the saved account (its unpublished keys), so a retry after a
  crash uploads exactly the same keys; they are marked published only on the server's answer;
- no new keys are generated while an upload is pending (counts in sync may predate it).
Gap (vodozemac 0.10): an account keeps at most two fallback keys (current + previous) and cannot forget
the previous one early; it goes when the next one is generated.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import vodozemac

from nimbus.api import keys as keys_api
from nimbus.api.request import Request
from nimbus.crypto import records
from nimbus.crypto.canonical_json import sign_json
from nimbus.crypto.errors import StoreDataError
from nimbus.crypto.records import AccountRecord
from nimbus.crypto.state import State

OLM_ALGORITHM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM_ALGORITHM = "m.megolm.v1.aes-sha2"
SIGNED_CURVE = "signed_curve25519"


class AccountMachine:
    def __init__(
        self,
        state: State,
        user_id: str,
        device_id: str,
        pickle_key: bytes,
        account: vodozemac.Account,
        record: AccountRecord,
    ) -> None:
        self.state = state
        self.user_id = user_id
        self.device_id = device_id
        self._pickle_key = pickle_key
        self.account = account
        self.record = record

    @classmethod
    async def load(cls, state: State, user_id: str, device_id: str, pickle_key: bytes) -> AccountMachine:
        record = await state.get(AccountRecord, records.ACCOUNT, "", "")
        if record is None:
            account = vodozemac.Account()
            # First use: OTKs and a fallback key go up with the device keys.
            account.generate_one_time_keys(account.max_number_of_one_time_keys // 2)
            _generate_fallback_key(account)
            me = cls(
                state, user_id, device_id, pickle_key, account, AccountRecord(pickle="", upload_generation=1)
            )
            me.save()
            return me
        try:
            account = vodozemac.Account.from_pickle(record.pickle, pickle_key)
        except ValueError:
            raise StoreDataError("the account pickle cannot be read (wrong pickle key?)") from None
        return cls(state, user_id, device_id, pickle_key, account, record)

    def save(self, **changes: Any) -> None:
        fields = {**dataclasses.asdict(self.record), **changes}
        fields["pickle"] = self.account.pickle(self._pickle_key)
        self.record = AccountRecord(**fields)
        self.state.put(records.ACCOUNT, "", "", self.record)

    # -- identity -----------------------------------------------------------------------------------

    @property
    def curve25519(self) -> str:
        return self.account.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        return self.account.ed25519_key.to_base64()

    def sign(self, message: bytes) -> str:
        return self.account.sign(message).to_base64()

    def _sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        return sign_json(obj, self.sign, self.user_id, f"ed25519:{self.device_id}")

    def device_keys(self) -> dict[str, Any]:
        """Our signed device keys (spec: "Device keys")."""
        return self._sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
                "keys": {
                    f"curve25519:{self.device_id}": self.curve25519,
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    # -- one-time / fallback keys ---------------------------------------------------------------------

    def upload_pending(self) -> bool:
        return (
            not self.record.device_keys_uploaded
            or bool(self.account.one_time_keys)
            or bool(_fallback_key(self.account))
        )

    def update_key_counts(self, counts: dict[str, int], unused_fallback: list[str] | None) -> None:
        """Spec: one_time_keys_count / device_unused_fallback_key_types in /sync. Top up to max/2."""
        if self.upload_pending():
            return
        generated = False
        target = self.account.max_number_of_one_time_keys // 2
        have = counts.get(SIGNED_CURVE, 0)
        if have < target:
            self.account.generate_one_time_keys(target - have)
            generated = True
        if unused_fallback is not None and SIGNED_CURVE not in unused_fallback:
            _generate_fallback_key(self.account)
            generated = True
        if generated:
            self.save(upload_generation=self.record.upload_generation + 1)

    def upload_request(self) -> tuple[str, Request] | None:
        """The pending /keys/upload (request id, request), rebuilt from the saved account, or None."""
        if not self.upload_pending():
            return None
        otks = {
            f"{SIGNED_CURVE}:{kid}": self._sign({"key": key.to_base64()})
            for kid, key in self.account.one_time_keys.items()
        }
        fallback = {
            f"{SIGNED_CURVE}:{kid}": self._sign({"key": key.to_base64(), "fallback": True})
            for kid, key in _fallback_key(self.account).items()
        }
        request = keys_api.upload_keys(
            device_keys=None if self.record.device_keys_uploaded else self.device_keys(),
            one_time_keys=otks or None,
            fallback_keys=fallback or None,
        )
        return f"keys_upload-{self.record.upload_generation}", request

    def mark_uploaded(self) -> None:
        """The server answered our upload: the keys are published."""
        self.account.mark_keys_as_published()
        self.save(device_keys_uploaded=True, upload_generation=self.record.upload_generation + 1)


def _generate_fallback_key(account: vodozemac.Account) -> None:
    # Present in vodozemac 0.10 but missing from its (out of date) type stubs.
    account.generate_fallback_key()  # type: ignore[attr-defined]


def _fallback_key(account: vodozemac.Account) -> dict[str, vodozemac.Curve25519PublicKey]:
    """The unpublished fallback key only (read it before mark_keys_as_published)."""
    keys: dict[str, vodozemac.Curve25519PublicKey] = account.fallback_key  # type: ignore[attr-defined]
    return keys


def b64(data: bytes) -> str:
    """Unpadded standard base64 (spec: appendices, "Unpadded Base64")."""
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
