"""Content by CID: computing and verifying CIDs while streaming, downloading from the node and gateways,
uploading (Kubo or Pinata), the local cache of verified assets, and reading IPFS multiaddrs.

Imports ``net``, ``config`` and ``errors``; ``multiaddr`` imports nothing, so ``config`` may use it.
"""
