"""Paillier keys, fast encryption, packing, encrypted vectors and wire frames.

This package does no I/O besides reading and writing key files, and imports nothing
from the server, the client or the response engine.
"""
