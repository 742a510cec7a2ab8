"""Talking to the VeriFrame backend: the wallet sign-in (challenge, Stark signature, JWT) and the job API.

Imports the HTTP plumbing (``net``), ``config`` and ``errors`` only; nothing here knows about IPFS or
Blender.
"""
