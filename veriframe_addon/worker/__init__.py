"""The worker core: plain Python, no ``bpy`` anywhere below this folder.

It runs in Blender's Python (driven by the extension's timer through a thread) and in any Python that
has its dependencies (tests, ``python -m veriframe_addon``). ``Worker`` in ``loop.py`` is the entry.

The folders follow a job's path: ``backend/`` (claim) -> ``ipfs/`` (fetch by CID, verified) ->
``scene/`` (unpack, settings) -> ``render/`` (contained Blender) -> ``ipfs/`` (upload) -> ``state/``
(journal) -> ``backend/`` (report). ``job.py`` walks one job down that path, ``bookkeeping.py`` keeps
what must survive a restart, and ``loop.py`` picks the next job.

``LAYERS`` is the one statement of who may import whom, lowest first: a module imports only modules of
its own layer or a lower one, and nothing outside the worker but the bpy-free package root
(``tests/test_layers.py`` checks it, and that no imports run in a cycle). An entry names a module or a
package; the most specific entry that fits a module places it.
"""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "limits", "multiaddr"),  # plain facts: errors, caps, the IPFS address parser
    ("env_mode", "keystore", "policy", "config"),  # what the operator set: settings, key, job rules
    ("observe",),  # how the worker reports: logs, per-stage telemetry
    ("net",),  # HTTP with retries, for the backend and IPFS alike
    ("backend", "ipfs", "scene", "render", "state", "proof"),  # the stages of a job, and its receipt
    ("status", "bookkeeping", "finisher", "job", "loop"),  # the job flow
    ("ops",),  # the operator's tools around a running worker: status server, set-up check
    ("service", "runner", "doctor"),  # the hosts: headless, inside Blender, and the doctor command
)
