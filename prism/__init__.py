"""prism: an asyncio port of LBRY's reflector.go."""

__version__ = "0.1.0"
