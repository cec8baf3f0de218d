"""Iterative find_node / find_value as a sans-IO state machine (alpha parallel probes, k results)."""

from __future__ import annotations

from collections.abc import Container, Iterable

from prism.dht.messages import FindValueResult
from prism.dht.routing import Contact, id_int

MAX_VALUE_PAGES = 16
"""Pages of peers fetched from one findValue holder, at most (8 peers a page)."""


def more_value_pages(first: FindValueResult) -> range:
    """The further pages to ask a findValue holder for, after its first answer: lbry-sdk-style nodes page
    more than 8 holders and say how many pages there are."""
    return range(1, min(first.pages, MAX_VALUE_PAGES)) if first.peers else range(0)


class IterativeLookup:
    """Drive with `next_probes()`, then `on_response` / `on_failure` per probe, until `done`.

    Keeps at most `alpha` probes in flight, always to the closest candidates not yet asked, among the `k`
    closest known. Finishes when a find_value probe returns peers, or as soon as the k closest candidates
    that did not fail have all answered (nothing closer is left to ask; probes still in flight to farther
    nodes cannot change the result, so they are not waited for). Contacts in `bad` (known to have stopped
    answering) are never asked.
    """

    def __init__(
        self,
        own_id: bytes,
        target: bytes,
        initial: Iterable[Contact],
        *,
        find_value: bool = False,
        k: int = 8,
        alpha: int = 5,
        bad: Container[bytes] = (),
    ) -> None:
        self.own_id = own_id
        self.target = target
        self.find_value = find_value
        self.k = k
        self.alpha = alpha
        self.bad = bad
        self._t = id_int(target)
        self._known: dict[bytes, Contact] = {}
        self._asked: set[bytes] = set()
        self._in_flight: set[bytes] = set()
        self._failed: set[bytes] = set()
        self._answered: dict[bytes, Contact] = {}
        self._nearest: list[Contact] | None = None
        """The k closest known contacts that did not fail (None: to be sorted again)."""
        self.peers: list[tuple[str, int, bytes]] = []
        self.value_holders: list[Contact] = []
        self.found = False
        self.add_candidates(initial)

    def add_candidates(self, contacts: Iterable[Contact]) -> None:
        known, own, bad = self._known, self.own_id, self.bad
        for c in contacts:
            nid = c.node_id
            if nid not in known and nid != own and nid not in bad:
                known[nid] = c
                self._nearest = None

    def _candidates(self) -> list[Contact]:
        """The k closest known contacts that have not failed, nearest first."""
        if self._nearest is None:
            failed, t = self._failed, self._t
            alive = [c for nid, c in self._known.items() if nid not in failed]
            alive.sort(key=lambda c: c.int_id ^ t)
            self._nearest = alive[: self.k]
        return self._nearest

    def next_probes(self) -> list[Contact]:
        """Contacts to ask now (marked in flight)."""
        if self.done:
            return []
        out: list[Contact] = []
        room = self.alpha - len(self._in_flight)
        if room <= 0:
            return out
        for c in self._candidates():
            if c.node_id not in self._asked:
                self._asked.add(c.node_id)
                self._in_flight.add(c.node_id)
                out.append(c)
                if len(out) >= room:
                    break
        return out

    def on_response(
        self,
        asked: Contact,
        responder: Contact,
        contacts: Iterable[Contact],
        peers: list[tuple[str, int, bytes]] | None = None,
    ) -> None:
        self._in_flight.discard(asked.node_id)
        if responder.node_id != asked.node_id:
            # the address answered with another id: treat the asked id as gone, the responder as asked
            self._failed.add(asked.node_id)
            self._nearest = None
            self._asked.add(responder.node_id)
            self._known.setdefault(responder.node_id, responder)
        self._answered[responder.node_id] = responder
        self.add_candidates(contacts)
        if self.find_value and peers:
            self.found = True
            self.value_holders.append(responder)
            seen = {p[2] for p in self.peers}
            self.peers.extend(p for p in peers if p[2] not in seen)

    def on_failure(self, asked: Contact) -> None:
        self._in_flight.discard(asked.node_id)
        self._failed.add(asked.node_id)
        self._nearest = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def done(self) -> bool:
        if self.found:
            return True
        answered = self._answered
        return all(c.node_id in answered for c in self._candidates())

    def result(self) -> list[Contact]:
        """Up to k contacts that answered, nearest to the target first."""
        return sorted(self._answered.values(), key=lambda c: c.int_id ^ self._t)[: self.k]
