"""Gossiping between a user's own devices: room key requests and forwarded room keys (key_requests.py).

Spec: https://spec.matrix.org/v1.12/client-server-api/#key-requests (m.room_key_request,
m.forwarded_room_key). Only our own, cross-signed devices are ever asked or answered.
"""

from nimbus.crypto.gossip.key_requests import (
    KEY_REQUEST,
    KeyGossip,
    KeyRequestRecord,
    OwnDeviceTrust,
    PendingAnswerRecord,
)

__all__ = ["KEY_REQUEST", "KeyGossip", "KeyRequestRecord", "OwnDeviceTrust", "PendingAnswerRecord"]
