"""Server discovery and capabilities: GET /_matrix/client/versions and /.well-known/matrix/client.

Spec: https://spec.matrix.org/v1.12/client-server-api/#server-discovery (well-known URI) and
#get_matrixclientversions. Both endpoints need no access token. The well-known request must be sent
to `https://<server_name>`, not to the homeserver's base URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.errors import MalformedResponse
from nimbus.api.request import Request

VERSIONS_PATH = "/_matrix/client/versions"
WELL_KNOWN_PATH = "/.well-known/matrix/client"


@dataclass(frozen=True)
class Versions:
    """The spec versions a server supports and its unstable feature flags."""

    versions: tuple[str, ...]
    unstable_features: dict[str, bool] = field(default_factory=dict)

    def supports(self, version: str) -> bool:
        return version in self.versions


@dataclass(frozen=True)
class ClientWellKnown:
    """`m.homeserver.base_url` (required) and `m.identity_server.base_url` (optional), no trailing /."""

    homeserver_base_url: str
    identity_server_base_url: str | None = None


def versions() -> Request:
    # Spec: GET /_matrix/client/versions (#get_matrixclientversions)
    return Request("GET", VERSIONS_PATH, auth=False)


def parse_versions(body: Any) -> Versions:
    what = VERSIONS_PATH
    data = p.obj(body, what)
    flags = p.opt_obj(data, "unstable_features", what)
    return Versions(
        versions=p.str_list(data, "versions", what),
        unstable_features={k: v for k, v in flags.items() if isinstance(v, bool)},
    )


def well_known() -> Request:
    # Spec: GET /.well-known/matrix/client (#getwell-knownmatrixclient)
    return Request("GET", WELL_KNOWN_PATH, auth=False)


def _base_url(section: Any, key: str) -> str | None:
    if not isinstance(section, dict):
        raise MalformedResponse(f"{key!r} is not an object", WELL_KNOWN_PATH)
    url = section.get("base_url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise MalformedResponse(f"{key}.base_url missing or not an http(s) URL", WELL_KNOWN_PATH)
    return url.rstrip("/")


def parse_well_known(body: Any) -> ClientWellKnown:
    """Spec "Well-known URI": FAIL_PROMPT when m.homeserver or its base_url is missing/invalid."""
    data = p.obj(body, WELL_KNOWN_PATH)
    if "m.homeserver" not in data:
        raise MalformedResponse("'m.homeserver' missing", WELL_KNOWN_PATH)
    homeserver = _base_url(data["m.homeserver"], "m.homeserver")
    assert homeserver is not None
    identity = None
    if "m.identity_server" in data:
        identity = _base_url(data["m.identity_server"], "m.identity_server")
    return ClientWellKnown(homeserver_base_url=homeserver, identity_server_base_url=identity)
