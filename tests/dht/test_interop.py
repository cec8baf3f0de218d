"""Interop on real UDP sockets (127.0.0.1) with test peers built byte-exactly from the specs.

The peers in wire_peers.py stand in for lbry-sdk and reflector.go nodes, which cannot run here.
"""

from __future__ import annotations

import os

import pytest

from prism.dht import DhtConfig, DhtNode
from tests.dht.wire_peers import LbrySdkStylePeer, ReflectorGoStylePeer, compact, go_decode, sdk_decode


@pytest.fixture
async def node():
    n = DhtNode(
        host="127.0.0.1", port=0, peer_port=5567, config=DhtConfig(allow_private_peers=True, rpc_timeout=1.0)
    )
    await n.start()
    yield n
    await n.stop()


async def test_sdk_style_peer_pings_finds_and_stores_to_prism(node):
    sdk = LbrySdkStylePeer()
    await sdk.start()
    try:
        rpc = os.urandom(20)
        raw = await sdk.send_raw(sdk.ping_bytes(rpc), node.address, rpc)
        assert raw == b"di0ei1ei1e20:" + rpc + b"i2e48:" + node.node_id + b"i3e4:ponge"
        # findNode on an empty table: the 93-byte answer a live lbry-sdk node gives too
        rpc = os.urandom(20)
        raw = await sdk.send_raw(sdk.find_node_bytes(rpc, os.urandom(48)), node.address, rpc)
        assert len(raw) == 93 and raw.endswith(b"i3elee")
        key = os.urandom(48)
        fv = await sdk.call(sdk.find_value_bytes(os.urandom(20), key), node.address)
        result = fv[3]
        assert set(result) == {b"token", b"contacts", b"p", b"protocolVersion"}
        assert len(result[b"token"]) == 48 and result[b"p"] == 0 and result[b"protocolVersion"] == 1
        ok = await sdk.call(sdk.store_bytes(os.urandom(20), key, result[b"token"], 4444), node.address)
        assert ok[0] == 1 and ok[3] == b"OK"
        # a second lbry-sdk peer finds the first one's compact address
        other = LbrySdkStylePeer()
        await other.start()
        try:
            got = await other.call(other.find_value_bytes(os.urandom(20), key), node.address)
            assert got[3][key] == [compact("127.0.0.1", 4444, sdk.node_id)] and got[3][b"p"] == 1
            # a token prism never issued: lbry-sdk's error form, readable by lbry-sdk's decoder
            rpc = os.urandom(20)
            raw = await other.send_raw(other.store_bytes(rpc, key, os.urandom(48), 4444), node.address, rpc)
            assert raw == (
                b"di0ei2ei1e20:"
                + rpc
                + b"i2e48:"
                + node.node_id
                + b"i3e20:<class 'ValueError'>i4e13:Invalid tokene"
            )
            assert sdk_decode(raw)[4] == b"Invalid token"
        finally:
            other.close()
    finally:
        sdk.close()


async def test_prism_pings_finds_and_stores_to_sdk_style_peer(node):
    sdk = LbrySdkStylePeer()
    await sdk.start()
    try:
        third = (os.urandom(48), "127.0.0.1", 4000)
        sdk.known.append(third)
        responder = await node.ping(sdk.addr)
        assert responder.node_id == sdk.node_id and sdk.node_id in node.core.routing
        contact = node.core.routing.get(sdk.node_id)
        contacts, _ = await node.find_node(contact, os.urandom(48))
        assert [(c.node_id, c.ip, c.port) for c in contacts] == [third]
        key = os.urandom(48)
        fv, _ = await node.find_value(contact, key)
        assert fv.token == sdk.token_for("127.0.0.1") and fv.protocol_version == 1
        assert await node.store(contact, key)
        (stored,) = sdk.stores
        # flat layout, our id, the token sdk issued, our TCP peer port; decoded fully by lbry-sdk's decoder
        assert stored["blob"] == key and stored["token"] == fv.token and stored["port"] == 5567
        assert stored["node_id"] == node.node_id and stored["age"] == 0
        assert b"d15:protocolVersioni1eeee" in stored["raw"][-30:]
        # the requests prism sent are lbry-sdk's exact shapes
        kinds = [sdk_decode(d)[3] for d, _ in sdk.received if sdk_decode(d)[0] == 0]
        assert kinds == [b"ping", b"findNode", b"findValue", b"store"]
        # and prism finds the peer it announced through the sdk-style node
        peers = await node.find_peers(key)
        assert [(p.ip, p.tcp_port, p.node_id) for p in peers] == [("127.0.0.1", 5567, node.node_id)]
    finally:
        sdk.close()


async def test_sdk_style_peer_refuses_a_legacy_store():
    """Why the layout is chosen per recipient: lbry-sdk's decoder cuts the legacy argument list short."""
    sdk = LbrySdkStylePeer()
    await sdk.start()
    go = ReflectorGoStylePeer()
    await go.start()
    try:
        mid = os.urandom(20)
        raw = await go.send_raw(go.store_bytes(mid, os.urandom(48), b"t" * 32, 3333), sdk.addr, mid)
        err = sdk_decode(raw)
        assert err[0] == 2 and err[3] == b"<class 'ValueError'>" and b"not enough values" in err[4]
    finally:
        sdk.close()
        go.close()


async def test_go_style_peer_talks_to_prism(node):
    go = ReflectorGoStylePeer()
    await go.start()
    try:
        mid = os.urandom(20)
        raw = await go.send_raw(go.ping_bytes(mid), node.address, mid)
        assert go_decode(raw) == {0: 1, 1: mid, 2: node.node_id, 3: b"pong"}
        key = os.urandom(48)
        fv = await go.call(go.find_value_bytes(os.urandom(20), key), node.address)
        # no protocolVersion asked: reflector.go's answer shape, token opaque (prism's are 48 bytes)
        assert set(fv[3]) == {b"contacts", b"token"}
        token = fv[3][b"token"]
        # legacy 4-element store echoing prism's token: accepted
        ok = await go.call(go.store_bytes(os.urandom(20), key, token, 3333, pubid=b"\0" * 48), node.address)
        assert ok[3] == b"OK"
        # another Go peer gets the 'fv found' shape, with the announcer keyed by its own node id
        go2 = ReflectorGoStylePeer()
        await go2.start()
        try:
            found = await go2.call(go2.find_value_bytes(os.urandom(20), key), node.address)
            assert set(found[3]) == {key, b"token"}
            assert found[3][key] == [compact("127.0.0.1", 3333, go.node_id)]
            # the same store with a token prism never issued
            mid = os.urandom(20)
            raw = await go2.send_raw(go2.store_bytes(mid, key, os.urandom(32), 3333), node.address, mid)
            err = go_decode(raw)
            assert err[0] == 2 and err[3] == b"<class 'ValueError'>" and err[4] == b"Invalid token"
        finally:
            go2.close()
    finally:
        go.close()


async def test_prism_announces_to_go_style_peer_in_legacy_layout(node):
    go = ReflectorGoStylePeer()
    await go.start()
    try:
        await node.ping(go.addr)
        key = os.urandom(48)
        assert await node.announce_hash(key) == 1
        (stored,) = go.stores
        token = go.token_for(node.node_id, "127.0.0.1", node.address[1])
        raw = stored["raw"]
        # byte-exact reflector.go store template, our id as lbryid and publisher, Go's token echoed
        expected_tail = (
            b"1:248:" + node.node_id + b"1:35:store1:4l48:" + key + b"d6:lbryid48:" + node.node_id
            + b"4:porti5567e5:token32:" + token + b"e48:" + node.node_id + b"i0eee"
        )  # fmt: skip
        assert raw.startswith(b"d1:0i0e1:120:") and raw[33:] == expected_tail
        # prism never sent reflector.go a datagram it would drop
        assert go.dropped == []
    finally:
        go.close()


async def test_go_style_invalid_token_error_makes_prism_refresh_and_retry(node):
    go = ReflectorGoStylePeer()
    await go.start()
    try:
        await node.ping(go.addr)
        contact = node.core.routing.get(go.node_id)
        key = os.urandom(48)
        await node.find_value(contact, key)
        go.secret = os.urandom(64)  # the cached token goes stale
        assert await node.store(contact, key)
        assert len(go.stores) == 1
    finally:
        go.close()


async def test_announce_with_a_stale_cached_token_refreshes_it_and_stores(node):
    go = ReflectorGoStylePeer()
    await go.start()
    try:
        await node.ping(go.addr)
        contact = node.core.routing.get(go.node_id)
        await node.find_value(contact, os.urandom(48))  # a token cached for the announce's direct store
        go.secret = os.urandom(64)
        key = os.urandom(48)
        assert await node.announce_hash(key) == 1
        assert len(go.stores) == 1 and go.stores[0]["raw"].find(key) > 0
    finally:
        go.close()
