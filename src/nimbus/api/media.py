"""Content repository: upload, authenticated download, mxc:// URIs.

Spec: https://spec.matrix.org/v1.12/client-server-api/#content-repository — POST
/_matrix/media/v3/upload (raw bytes body, Content-Type header, `filename` query) and the
authenticated GET /_matrix/client/v1/media/download/{serverName}/{mediaId} (v1.11+). Downloads
answer raw bytes: send them with `Transport.send_bytes`.
"""

from __future__ import annotations

import re
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.errors import MalformedResponse
from nimbus.api.request import QueryValue, Request, quote
from nimbus.types.errors import MalformedData
from nimbus.types.ids import ServerName

UPLOAD_PATH = "/_matrix/media/v3/upload"
DOWNLOAD_PREFIX = "/_matrix/client/v1/media/download"

# Spec "Matrix Content (mxc://) URIs": server name, then a media id of [A-Za-z0-9_-].
_MXC_RE = re.compile(r"^mxc://([^/\s]+)/([A-Za-z0-9_-]+)$")


class InvalidMxcUri(MalformedData):
    """A string is not an mxc://<server-name>/<media-id> URI."""


def parse_mxc(uri: str) -> tuple[ServerName, str]:
    """(server name, media id) of an mxc:// URI. Raises InvalidMxcUri."""
    match = _MXC_RE.match(uri) if isinstance(uri, str) else None
    if match is None:
        raise InvalidMxcUri("not an mxc://<server-name>/<media-id> URI")
    return ServerName(match.group(1)), match.group(2)


def upload(
    content: bytes, content_type: str = "application/octet-stream", filename: str | None = None
) -> Request:
    # Spec: POST /_matrix/media/v3/upload
    query: dict[str, QueryValue] = {} if filename is None else {"filename": filename}
    return Request("POST", UPLOAD_PATH, query=query, content=content, content_type=content_type)


def parse_upload(body: Any) -> str:
    """The new `content_uri` (checked to be an mxc URI)."""
    uri = p.req_str(p.obj(body, UPLOAD_PATH), "content_uri", UPLOAD_PATH)
    try:
        parse_mxc(uri)
    except InvalidMxcUri:
        raise MalformedResponse("'content_uri' is not an mxc:// URI", UPLOAD_PATH) from None
    return uri


def download(mxc_uri: str, *, timeout_ms: int | None = None) -> Request:
    # Spec: GET /_matrix/client/v1/media/download/{serverName}/{mediaId} (authenticated)
    server, media_id = parse_mxc(mxc_uri)
    query: dict[str, QueryValue] = {} if timeout_ms is None else {"timeout_ms": str(timeout_ms)}
    return Request("GET", f"{DOWNLOAD_PREFIX}/{quote(server)}/{quote(media_id)}", query=query)
