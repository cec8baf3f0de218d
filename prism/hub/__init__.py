"""The wallet-server (hub) client and the transaction parser it needs (claims.md §2)."""
