"""How the worker reports on itself: logging (formats, secret masking, rotating files), per-job stage
telemetry, and the Prometheus metrics.

Imports ``config`` (and its ``env_mode``) and ``errors``; everything from ``net`` up may count.
"""
