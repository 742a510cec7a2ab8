"""HTTP with retries, shared by the backend client and the IPFS client: the retry policy and the JSON
transport with the worker's user agent.

Imports ``errors`` and the metrics counters only.
"""
