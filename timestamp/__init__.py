"""Timestamping authority: an RFC 3161 service over HTTP."""
