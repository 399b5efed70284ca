"""Local I/O shared by the role packages: the clock, and careful file writes.

The protocol core never imports this; roles (central server, security
server, TSA) and the CLI do.
"""
