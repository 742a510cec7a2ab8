"""How the worker reports on itself: logging (formats, secret masking, rotating files), per-job stage
telemetry, and the Prometheus metrics.

Imports ``config`` and ``errors``; ``metrics`` imports nothing, so every layer may count.
"""
