"""Send-to-device messaging: PUT /sendToDevice/{eventType}/{txnId}.

Spec: https://spec.matrix.org/v1.12/client-server-api/#send-to-device-messaging. The txn id makes the
request idempotent (retry-safe). `messages` maps user id → device id (or "*") → content.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nimbus.api.request import Request, quote


def send_to_device(
    event_type: str, messages: Mapping[str, Mapping[str, Mapping[str, Any]]], txn_id: str
) -> Request:
    # Spec: PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
    body = {"messages": {user: {dev: dict(c) for dev, c in devs.items()} for user, devs in messages.items()}}
    path = f"/_matrix/client/v3/sendToDevice/{quote(event_type)}/{quote(txn_id)}"
    return Request("PUT", path, json=body, retry_safe=True)
