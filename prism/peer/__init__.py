"""LBRY peer protocol (TCP blob download): sans-IO codec, asyncio server and client."""
