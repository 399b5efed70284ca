"""Security server: client proxy, server proxy and their stores (adapters over protocol)."""
