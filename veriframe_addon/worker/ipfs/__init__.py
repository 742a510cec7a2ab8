"""Content by CID: computing and verifying CIDs while streaming, downloading from the node and gateways,
uploading (Kubo or Pinata), and the local cache of verified assets.

Imports ``net``, ``config`` and ``errors`` (``config`` reads the IPFS address with ``multiaddr``, one
floor down, so nothing here is imported by it).
"""
