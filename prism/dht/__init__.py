"""The LBRY DHT: a Kademlia node wire-compatible with lbry-sdk (lbrynet) and reflector.go.

Sans-IO at the core (`bencode`, `messages`, `routing`, `tokens`, `peerstore`, `lookup`, `schedule`, `core`),
with an asyncio shell (`node.DhtNode`, `workers`) and an optional JSON-RPC front (`rpc`).
"""

from prism.dht.config import DEFAULT_SEEDS, DhtConfig
from prism.dht.node import DhtNode, Peer, RpcErrorReply, RpcFailed, RpcTimeout

__all__ = ["DEFAULT_SEEDS", "DhtConfig", "DhtNode", "Peer", "RpcErrorReply", "RpcFailed", "RpcTimeout"]
