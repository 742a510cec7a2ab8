"""The operator's tools around a running worker: the loopback status server (``/health``,
``/metrics``), the set-up check and ``doctor``.

The top layer with the hosts: may import everything below, including the job flow.
"""
