"""Cluster membership on a serf agent (msgpack RPC) and the sans-IO rules that slice the key space."""
