"""Olm sessions: creation from claimed one-time keys, per-device encryption, to-device decryption.

Spec: https://spec.matrix.org/v1.12/client-server-api/#molmv1curve25519-aes-sha2 ("m.olm.v1.curve25519-
aes-sha2"), POST /keys/claim, "Recovering from undecryptable messages". Rules:
- a claimed one-time key is used only if its signature by the device's (verified) Ed25519 key checks;
- every decrypted payload is checked before it is trusted: sender, recipient, recipient_keys.ed25519,
  keys.ed25519 against the device we know for the sender's Curve25519 key, sender_device_keys if present;
- a message a session already decrypted (missing message key) is a duplicate, not a wedge;
- a wedged session (nothing decrypts a normal message / a pre-key message makes no session) gets a new
  outbound session + m.dummy, at most once an hour per device (time from `now_ms`);
- every ratchet advance (encrypt or decrypt) is put in the change set at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import vodozemac

from nimbus.api import keys as keys_api
from nimbus.api.request import Request
from nimbus.crypto import records
from nimbus.crypto.canonical_json import SignatureError, verify_json
from nimbus.crypto.devices.tracker import DeviceTracker, check_device_keys
from nimbus.crypto.errors import StoreDataError, ToDeviceCause
from nimbus.crypto.olm.account import OLM_ALGORITHM, SIGNED_CURVE, AccountMachine, b64, unb64
from nimbus.crypto.records import DeviceRecord, OlmSessionRecord, UnwedgeRecord
from nimbus.crypto.state import State

UNWEDGE_INTERVAL_MS = 60 * 60 * 1000
CLAIM_CHUNK = 100  # devices per /keys/claim request


class OlmFailure(Exception):
    """Internal: a to-device Olm message we could not accept (cause + detail without secrets)."""

    def __init__(self, cause: ToDeviceCause, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True)
class OlmDecrypted:
    payload: dict[str, Any]
    sender_key: str  # the Olm-authenticated Curve25519 key
    signing_key: str  # the Ed25519 key the payload claims, checked against what we know
    sender_device: str | None
    device_known: bool


def _is_duplicate(error: Exception) -> bool:
    # vodozemac's DecryptionError::MissingMessageKey: the chain already passed this index, i.e. we
    # decrypted this very message before.
    return "can't be created" in str(error)


class OlmSessions:
    def __init__(
        self, state: State, account: AccountMachine, devices: DeviceTracker, pickle_key: bytes
    ) -> None:
        self.state = state
        self.account = account
        self.devices = devices
        self._pickle_key = pickle_key

    # -- sessions -----------------------------------------------------------------------------------

    async def _records(self, curve: str) -> list[OlmSessionRecord]:
        recs = (await self.state.list(OlmSessionRecord, records.OLM_SESSION, curve)).values()
        return sorted(recs, key=lambda r: (r.last_used_ms, r.created_ms), reverse=True)

    def _unpickle(self, rec: OlmSessionRecord) -> vodozemac.Session:
        try:
            return vodozemac.Session.from_pickle(rec.pickle, self._pickle_key)
        except ValueError:
            raise StoreDataError("an Olm session pickle cannot be read") from None

    def _save(self, curve: str, session: vodozemac.Session, peer: str, created: int, used: int) -> None:
        rec = OlmSessionRecord(session.pickle(self._pickle_key), session.session_id, peer, created, used)
        self.state.put(records.OLM_SESSION, curve, session.session_id, rec)

    async def has_session(self, device: DeviceRecord) -> bool:
        return bool(await self.state.list_raw(records.OLM_SESSION, device.curve25519))

    def claim_requests(self, devices: list[DeviceRecord]) -> list[Request]:
        """/keys/claim for these devices, chunked."""
        out = []
        for i in range(0, len(devices), CLAIM_CHUNK):
            want: dict[str, dict[str, str]] = {}
            for d in devices[i : i + CLAIM_CHUNK]:
                want.setdefault(d.user_id, {})[d.device_id] = SIGNED_CURVE
            out.append(keys_api.claim_keys(want))
        return out

    async def receive_claim(self, body: Any, now_ms: int) -> list[DeviceRecord]:
        """Create outbound sessions from a /keys/claim answer; returns the devices that got one."""
        response = keys_api.parse_claim_keys(body)
        made = []
        for user, by_device in response.one_time_keys.items():
            for device_id, keys in by_device.items():
                device = await self.devices.device(user, device_id)
                if device is None or not isinstance(keys, dict):
                    continue
                for key_id, obj in keys.items():
                    if not isinstance(key_id, str) or not key_id.startswith(SIGNED_CURVE + ":"):
                        continue
                    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
                        continue
                    try:  # spec: "signed_curve25519" keys are signed by the device's Ed25519 key
                        verify_json(obj, user, f"ed25519:{device_id}", device.ed25519)
                        session = self.account.account.create_outbound_session(
                            vodozemac.Curve25519PublicKey.from_base64(device.curve25519),
                            vodozemac.Curve25519PublicKey.from_base64(obj["key"]),
                        )
                    except (SignatureError, ValueError):
                        self.devices.problems.append(
                            self.devices.problem(user, device_id, "claimed one-time key failed its check")
                        )
                        continue
                    self._save(device.curve25519, session, user, now_ms, now_ms)
                    made.append(device)
                    break
        return made

    # -- encryption ---------------------------------------------------------------------------------

    async def encrypt(
        self, device: DeviceRecord, event_type: str, content: dict[str, Any], now_ms: int
    ) -> dict[str, Any] | None:
        """m.room.encrypted content for one device, or None without a session. Advances the ratchet."""
        recs = await self._records(device.curve25519)
        if not recs:
            return None
        rec = recs[0]
        session = self._unpickle(rec)
        payload = {
            "type": event_type,
            "content": content,
            "sender": self.account.user_id,
            "sender_device": self.account.device_id,
            "recipient": device.user_id,
            "recipient_keys": {"ed25519": device.ed25519},
            "keys": {"ed25519": self.account.ed25519},
            "sender_device_keys": self.account.device_keys(),
        }
        message_type, body = session.encrypt(json.dumps(payload).encode()).to_parts()
        self._save(device.curve25519, session, rec.peer_user, rec.created_ms, now_ms)
        return {
            "algorithm": OLM_ALGORITHM,
            "sender_key": self.account.curve25519,
            "ciphertext": {device.curve25519: {"type": message_type, "body": b64(body)}},
        }

    # -- decryption ---------------------------------------------------------------------------------

    async def decrypt(self, sender: str, content: dict[str, Any], now_ms: int) -> OlmDecrypted:
        """Decrypt and check an Olm to-device message. Raises OlmFailure."""
        sender_key = content.get("sender_key")
        ciphertexts = content.get("ciphertext")
        if not isinstance(sender_key, str) or not isinstance(ciphertexts, dict):
            raise OlmFailure(ToDeviceCause.MALFORMED, "Olm content lacks sender_key or ciphertext")
        mine = ciphertexts.get(self.account.curve25519)
        if mine is None:
            raise OlmFailure(ToDeviceCause.NOT_FOR_US, "no ciphertext for our device key")
        if (
            not isinstance(mine, dict)
            or mine.get("type") not in (0, 1)
            or not isinstance(mine.get("body"), str)
        ):
            raise OlmFailure(ToDeviceCause.MALFORMED, "Olm ciphertext lacks type or body")
        try:
            message = vodozemac.AnyOlmMessage.from_parts(mine["type"], unb64(mine["body"]))
            vodozemac.Curve25519PublicKey.from_base64(sender_key)
        except ValueError:
            raise OlmFailure(ToDeviceCause.MALFORMED, "Olm message or sender key does not decode") from None
        plaintext = await self._decrypt_message(sender, sender_key, message, now_ms)
        return await self._check_payload(sender, sender_key, plaintext)

    async def _decrypt_message(
        self, sender: str, sender_key: str, message: vodozemac.AnyOlmMessage, now_ms: int
    ) -> bytes:
        pre_key = message.to_pre_key()
        duplicate = False
        for rec in await self._records(sender_key):
            session = self._unpickle(rec)
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                plaintext = session.decrypt(message)
            except ValueError as e:
                duplicate = duplicate or _is_duplicate(e)
                if pre_key is not None:
                    break  # the one session this pre-key message belongs to could not decrypt it
                continue
            self._save(sender_key, session, rec.peer_user, rec.created_ms, now_ms)
            return plaintext
        if duplicate:
            raise OlmFailure(ToDeviceCause.DUPLICATE, "an Olm message we already decrypted")
        if pre_key is not None:
            try:
                peer = vodozemac.Curve25519PublicKey.from_base64(sender_key)
                session, plaintext = self.account.account.create_inbound_session(peer, pre_key)
            except ValueError:
                await self.unwedge(sender, sender_key, now_ms)
                raise OlmFailure(ToDeviceCause.WEDGED, "a pre-key message made no session") from None
            self.account.save()  # the one-time key is used up: never again
            self._save(sender_key, session, sender, now_ms, now_ms)
            return plaintext
        await self.unwedge(sender, sender_key, now_ms)
        raise OlmFailure(ToDeviceCause.WEDGED, "no Olm session decrypts this message")

    async def _check_payload(self, sender: str, sender_key: str, plaintext: bytes) -> OlmDecrypted:
        bad = ToDeviceCause.BAD_PAYLOAD
        try:
            payload = json.loads(plaintext)
        except (ValueError, UnicodeDecodeError):
            raise OlmFailure(bad, "Olm payload is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            raise OlmFailure(bad, "Olm payload lacks a type")
        if not isinstance(payload.get("content"), dict):
            raise OlmFailure(bad, "Olm payload lacks content")
        if payload.get("sender") != sender:
            raise OlmFailure(bad, "Olm payload sender differs from the to-device sender")
        if payload.get("recipient") != self.account.user_id:
            raise OlmFailure(bad, "Olm payload is for another recipient")
        recipient_keys, keys = payload.get("recipient_keys"), payload.get("keys")
        if not isinstance(recipient_keys, dict) or recipient_keys.get("ed25519") != self.account.ed25519:
            raise OlmFailure(bad, "Olm payload recipient_keys are not our keys")
        if not isinstance(keys, dict) or not isinstance(keys.get("ed25519"), str):
            raise OlmFailure(bad, "Olm payload lacks the sender's ed25519 key")
        signing_key: str = keys["ed25519"]
        known = await self.devices.device_by_curve(sender, sender_key)
        if known is not None and known.ed25519 != signing_key:
            raise OlmFailure(bad, "Olm payload keys differ from the sender device we know")
        sender_device = known.device_id if known else None
        sdk = payload.get("sender_device_keys")
        if sdk is not None:  # spec v1.15 (MSC4147): must be the same device, validly self-signed
            device_id = sdk.get("device_id") if isinstance(sdk, dict) else None
            try:
                rec = check_device_keys(sdk, sender, device_id if isinstance(device_id, str) else "")
            except ValueError as e:
                raise OlmFailure(bad, f"sender_device_keys rejected: {e}") from None
            if rec.curve25519 != sender_key or rec.ed25519 != signing_key:
                raise OlmFailure(bad, "sender_device_keys do not match the Olm keys")
            if known is not None and known.device_id != rec.device_id:
                raise OlmFailure(bad, "sender_device_keys name another device")
            sender_device = rec.device_id
        return OlmDecrypted(payload, sender_key, signing_key, sender_device, known is not None)

    # -- wedged sessions ------------------------------------------------------------------------------

    async def unwedge(self, sender: str, sender_key: str, now_ms: int) -> None:
        device = await self.devices.device_by_curve(sender, sender_key)
        if device is None:
            return
        rec = await self.state.get(UnwedgeRecord, records.UNWEDGE, sender, device.device_id)
        if rec is not None and now_ms - rec.last_attempt_ms < UNWEDGE_INTERVAL_MS:
            return  # rate limit: once an hour per device
        self.state.put(records.UNWEDGE, sender, device.device_id, UnwedgeRecord(sender_key, now_ms, True))

    async def pending_unwedge(self) -> list[DeviceRecord]:
        out = []
        for user in (await self.devices.tracked()).keys():
            for device_id, rec in (await self.state.list(UnwedgeRecord, records.UNWEDGE, user)).items():
                device = await self.devices.device(user, device_id)
                if rec.pending and device is not None:
                    out.append(device)
        return out

    async def unwedged(self, device: DeviceRecord) -> None:
        rec = await self.state.get(UnwedgeRecord, records.UNWEDGE, device.user_id, device.device_id)
        if rec is not None:
            self.state.put(
                records.UNWEDGE,
                device.user_id,
                device.device_id,
                UnwedgeRecord(rec.curve25519, rec.last_attempt_ms, False),
            )
