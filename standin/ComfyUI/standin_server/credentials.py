"""0.47.1's credentials for API nodes (server.py 5e14d797, comfy_api/credential_registry.py).

Credentials travel only over TLS or from a direct loopback peer (`transport_enabled`). Such a
peer's WebSocket gets a `credential_key` in its first `status` frame; the key proves the
client id afterwards: `X-Comfy-Client-Id` + `X-Comfy-Credential-Key` on POST /credentials (which
stores an `auth_token_comfy_org` for that client) and on POST /prompt, and a `credential_auth`
first message when a new socket replaces a live one of the same clientId (server.py).
The stand-in runs no API nodes: the tokens are kept and counted, never used, and prompts are
not bound to them (ComfyUI keeps a client's key across a disconnect while such prompts wait).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import PromptServer

CLIENT_ID_HEADER = "X-Comfy-Client-Id"
CREDENTIAL_KEY_HEADER = "X-Comfy-Credential-Key"
AUTH_MESSAGE = "credential_auth"  # the WebSocket message that presents a key
AUTH_WAIT_S = 5.0  # how long a socket that must authenticate is given
MAX_TOKEN_LENGTH = 16384
# feature_flags._CORE_FEATURE_FLAGS["comfy_api_credentials"], sent only where transport_enabled.
FEATURE = {"version": 1, "endpoint": "/api/credentials", "websocket_auth_message": AUTH_MESSAGE}

TRANSPORT_REFUSED = "Credential transport requires HTTPS or loopback"
INVALID_CREDENTIALS = "Invalid client credentials"


def transport_enabled(request: web.Request) -> bool:
    """_credential_transport_enabled: TLS, or a direct loopback peer (the stand-in serves no TLS)."""
    transport = request.transport
    if transport is None:
        return False
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None:
        return True
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple | list) or not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def key_matches(presented: Any, expected: Any) -> bool:
    return isinstance(presented, str) and isinstance(expected, str) and hmac.compare_digest(presented, expected)


def authenticated_client(request: web.Request, sockets_metadata: dict[str, dict[str, Any]]) -> str | None:
    """_authenticated_client_id: the client id the two headers prove, else None."""
    client_id = request.headers.get(CLIENT_ID_HEADER)
    key = request.headers.get(CREDENTIAL_KEY_HEADER)
    if not client_id or not key:
        return None
    expected = (sockets_metadata.get(client_id) or {}).get("credential_key")
    return client_id if key_matches(key, expected) else None


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


def refuse_transport(request: web.Request) -> web.Response | None:
    """POST /prompt, before its body is read: credential headers over a transport that may not carry them."""
    has_headers = CLIENT_ID_HEADER in request.headers or CREDENTIAL_KEY_HEADER in request.headers
    return _error(TRANSPORT_REFUSED, 403) if has_headers and not transport_enabled(request) else None


def refuse_prompt_client(
    request: web.Request, json_data: Any, sockets_metadata: dict[str, dict[str, Any]]
) -> web.Response | None:
    """POST /prompt, after its body is read: headers that prove nothing, or prove another client."""
    has_headers = CLIENT_ID_HEADER in request.headers or CREDENTIAL_KEY_HEADER in request.headers
    client = authenticated_client(request, sockets_metadata)
    if has_headers and client is None:
        return _error(INVALID_CREDENTIALS, 403)
    if client is not None and json_data.get("client_id") != client:
        return _error("client_id does not match authenticated client", 403)
    return None


def add_routes(r: web.RouteTableDef, server: PromptServer) -> None:
    generations: dict[str, tuple[str | None, int]] = {}  # client id -> (token, generation)

    @r.post("/credentials")
    async def update_api_credentials(request: web.Request) -> web.Response:
        if not transport_enabled(request):
            return _error(TRANSPORT_REFUSED, 403)
        client_id = authenticated_client(request, server.sockets_metadata)
        if client_id is None:
            return _error(INVALID_CREDENTIALS, 403)
        try:
            json_data = await request.json()
        except (json.JSONDecodeError, TypeError):
            return _error("Request body must be valid JSON", 400)
        if not isinstance(json_data, dict) or "auth_token_comfy_org" not in json_data:
            return _error("auth_token_comfy_org is required", 400)
        token = json_data["auth_token_comfy_org"]
        if token is not None and (not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH):
            return _error("auth_token_comfy_org must be a non-empty string or null", 400)
        current = generations.get(client_id)
        generation = 1 if current is None else current[1] + (current[0] != token)
        generations[client_id] = (token, generation)
        return web.json_response({"generation": generation})
