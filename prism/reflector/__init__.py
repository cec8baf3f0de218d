"""Reflector protocol (TCP blob upload, port 5566): sans-IO codec, receiver and client."""
