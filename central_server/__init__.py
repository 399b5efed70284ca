"""Central server: registry, CA and OCSP responder, global configuration publisher."""
