"""*sans-IO* the wallet server's newline-delimited JSON-RPC (claims.md §2.1, §2.2; spec §4.7).

Requests are one JSON object per line; answers are JSON-RPC 2.0 objects whose `error` is
`{"code", "message"}` or, from some servers, `{"message": {"code", "message"}}`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from prism.claim.schema import ERROR_CODES, Message, decode
from prism.claim.wire import WireError

VERSION_PROBE = b'{"id":1,"method":"server.version","params":["prism","1.0"]}\n'


class HubError(Exception):
    """The wallet server answered with an error, or not as the protocol says; the text is the hub's."""


def encode_request(request_id: int, method: str, params: list[str]) -> bytes:
    return (
        json.dumps({"id": request_id, "method": method, "params": params}, separators=(",", ":")).encode()
        + b"\n"
    )


def parse_response(line: bytes) -> tuple[Any, Any]:
    """(id, result) of one answer line; HubError for an error answer or a line that is not one."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        raise HubError("the wallet server sent a line that is not JSON") from None
    if not isinstance(msg, dict):
        raise HubError("the wallet server sent JSON that is not an object")
    error = msg.get("error")
    if error:
        raise HubError(_error_text(error))
    return msg.get("id"), msg.get("result")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        inner = error.get("message")
        if isinstance(inner, dict):
            return _error_text(inner)
        code = error.get("code")
        text = str(inner) if inner is not None else json.dumps(error)
        return f"{text} (code {code})" if code is not None else text
    return str(error)


def decode_outputs(result: Any) -> Message:
    """The base64 protobuf `Outputs` a resolve answers with."""
    if not isinstance(result, str):
        raise HubError("the resolve answer is not a base64 string")
    try:
        return decode("Outputs", base64.b64decode(result, validate=True))
    except (binascii.Error, ValueError, WireError) as e:
        raise HubError(f"the resolve answer is not a valid Outputs message: {e}") from None


def resolved_outpoint(outputs: Message) -> tuple[str, int]:
    """(txid, nout) of the one output of a resolve; the hub's error as `<CODE>: <text>`."""
    txos = outputs.get("txos") or []
    assert isinstance(txos, list)
    if len(txos) != 1:
        raise HubError(f"expected 1 output, got {len(txos)}")
    txo = txos[0]
    assert isinstance(txo, Message)
    error = txo.sub("error")
    if error is not None:
        code = error.get("code") or 0
        assert isinstance(code, int)
        name = ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else str(code)
        text = error.get("text") or ""
        assert isinstance(text, str)
        raise HubError(f"{name}: {text}")
    tx_hash = txo.get("tx_hash") or b""
    nout = txo.get("nout") or 0
    assert isinstance(tx_hash, bytes) and isinstance(nout, int)
    return tx_hash[::-1].hex(), nout
