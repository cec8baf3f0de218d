"""*sans-IO* Bitcoin-style transactions as LBRY uses them, and the claim scripts in their outputs.

Parsing finds the claim at an output (claims.md §2.3); serialising is what `publish` and the
stand-in lbrycrd need (version-1 transactions; txid = reversed double SHA-256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

OP_CLAIM_NAME, OP_SUPPORT_CLAIM, OP_UPDATE_CLAIM = 0xB5, 0xB6, 0xB7
OP_2DROP, OP_DROP = 0x6D, 0x75
OP_DUP, OP_HASH160, OP_EQUALVERIFY, OP_CHECKSIG = 0x76, 0xA9, 0x88, 0xAC
OP_PUSHDATA1, OP_PUSHDATA2 = 0x4C, 0x4D
MAX_SCRIPT_PUSH = 520


class TxError(ValueError):
    """Not a transaction, or no claim where one was expected."""


@dataclass
class TxIn:
    prev_txid: str
    """Display order (reversed) hex."""
    prev_nout: int
    script: bytes = b""
    sequence: int = 0xFFFFFFFF


@dataclass
class TxOut:
    value: int
    """Deweys (1 LBC = 10**8)."""
    script: bytes


@dataclass
class Transaction:
    version: int = 1
    inputs: list[TxIn] = field(default_factory=list)
    outputs: list[TxOut] = field(default_factory=list)
    locktime: int = 0

    def serialize(self) -> bytes:
        out = bytearray(self.version.to_bytes(4, "little"))
        out += var_int(len(self.inputs))
        for i in self.inputs:
            out += bytes.fromhex(i.prev_txid)[::-1] + i.prev_nout.to_bytes(4, "little")
            out += var_int(len(i.script)) + i.script + i.sequence.to_bytes(4, "little")
        out += var_int(len(self.outputs))
        for o in self.outputs:
            out += o.value.to_bytes(8, "little") + var_int(len(o.script)) + o.script
        out += self.locktime.to_bytes(4, "little")
        return bytes(out)

    @property
    def txid(self) -> str:
        return txid_of(self.serialize())


def txid_of(raw: bytes) -> str:
    """The transaction id: double SHA-256 of the serialisation, byte-reversed, hex."""
    return hashlib.sha256(hashlib.sha256(raw).digest()).digest()[::-1].hex()


def var_int(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise TxError("the transaction is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def var_int(self) -> int:
        first = self.uint(1)
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}.get(first)
        return self.uint(size) if size else first

    def var_bytes(self) -> bytes:
        return self.take(self.var_int())


def parse_transaction(raw: bytes) -> Transaction:
    """A serialised transaction (segwit marker allowed; witnesses are skipped)."""
    r = _Reader(raw)
    tx = Transaction(version=r.uint(4))
    count = r.var_int()
    segwit = count == 0 and r.pos < len(raw) and raw[r.pos] == 1
    if segwit:
        r.take(1)
        count = r.var_int()
    for _ in range(count):
        prev = r.take(32)[::-1].hex()
        tx.inputs.append(TxIn(prev, r.uint(4), r.var_bytes(), r.uint(4)))
    for _ in range(r.var_int()):
        tx.outputs.append(TxOut(r.uint(8), r.var_bytes()))
    if segwit:
        for _ in tx.inputs:
            for _ in range(r.var_int()):
                r.var_bytes()
    tx.locktime = r.uint(4)
    if r.pos != len(raw):
        raise TxError(f"{len(raw) - r.pos} bytes after the transaction's end")
    return tx


# -- scripts ----------------------------------------------------------------------------------
def push(data: bytes) -> bytes:
    """The shortest push of `data` (direct, PUSHDATA1 or PUSHDATA2)."""
    n = len(data)
    if n < OP_PUSHDATA1:
        return bytes([n]) + data
    if n <= 0xFF:
        return bytes([OP_PUSHDATA1, n]) + data
    return bytes([OP_PUSHDATA2]) + n.to_bytes(2, "little") + data


def _read_push(script: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(script):
        raise TxError("the claim script ends early")
    op = script[pos]
    pos += 1
    if op < OP_PUSHDATA1:
        n = op
    elif op == OP_PUSHDATA1:
        n, pos = int.from_bytes(script[pos : pos + 1], "little"), pos + 1
    elif op == OP_PUSHDATA2:
        n, pos = int.from_bytes(script[pos : pos + 2], "little"), pos + 2
    else:
        raise TxError(f"the claim script has opcode 0x{op:02x} where a push was expected")
    if pos + n > len(script):
        raise TxError("a push in the claim script runs past its end")
    return script[pos : pos + n], pos + n


@dataclass
class ClaimScript:
    name: bytes
    value: bytes
    claim_id: str | None = None
    """For updates: the claim id in display order."""


def parse_claim_script(script: bytes) -> ClaimScript:
    """The name, value (and claim id of an update) of a claim-name or claim-update script."""
    if not script or script[0] not in (OP_CLAIM_NAME, OP_UPDATE_CLAIM):
        raise TxError("no claim found in output")
    name, pos = _read_push(script, 1)
    claim_id = None
    if script[0] == OP_UPDATE_CLAIM:
        raw_id, pos = _read_push(script, pos)
        if len(raw_id) != 20:
            raise TxError("the update's claim id is not 20 bytes")
        claim_id = raw_id[::-1].hex()
    value, pos = _read_push(script, pos)
    tail = bytes([OP_2DROP, OP_2DROP]) if claim_id else bytes([OP_2DROP, OP_DROP])
    if script[pos : pos + 2] != tail:
        raise TxError("the claim script does not drop its pushes")
    return ClaimScript(name, value, claim_id)


def claim_at(raw_tx: bytes, nout: int) -> ClaimScript:
    """The claim in output `nout` of a serialised transaction."""
    tx = parse_transaction(raw_tx)
    if not 0 <= nout < len(tx.outputs):
        raise TxError("nout not found")
    return parse_claim_script(tx.outputs[nout].script)


def p2pkh(hash160: bytes) -> bytes:
    return bytes([OP_DUP, OP_HASH160, 20]) + hash160 + bytes([OP_EQUALVERIFY, OP_CHECKSIG])


def claim_name_script(name: bytes, value: bytes, hash160: bytes) -> bytes:
    """`OP_CLAIM_NAME <name> <value> OP_2DROP OP_DROP` paying to a pubkey hash."""
    if len(value) > MAX_SCRIPT_PUSH or len(name) > MAX_SCRIPT_PUSH:
        raise TxError(
            f"the claim value is {len(value)} bytes, over the {MAX_SCRIPT_PUSH}-byte script push limit "
            "lbrycrd enforces: shorten the title, description or tags"
        )
    return bytes([OP_CLAIM_NAME]) + push(name) + push(value) + bytes([OP_2DROP, OP_DROP]) + p2pkh(hash160)
