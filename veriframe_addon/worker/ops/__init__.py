"""The operator's tools around a running worker: the loopback status server (``/health``, ``/metrics``)
and the set-up check (behind the panel's Check setup and ``doctor``).

May import everything below, including the job flow; only the hosts (``service``, ``runner``,
``doctor``) import it.
"""
