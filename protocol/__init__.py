"""Core: X-Road wire formats and trust primitives, free of I/O.

Every role imports this package; it imports no role, no event loop, no
database and no socket. Time and nonces come in as arguments.
"""
