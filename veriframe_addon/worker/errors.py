"""Typed errors of the worker core.

Each carries the fact a node operator needs to act on it, and is logged once, where it is handled
(the job loop, the config loader, the CLI). Everything derives from ``WorkerError`` so a caller can
tell "the worker said no, for a reason" from a bug.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """A setting is missing or malformed; ``variable`` names it (e.g. ``WORKER_PRIVATE_KEY``)."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class BackendError(WorkerError):
    """The backend could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class AuthError(BackendError):
    """Sign-in failed: wrong key, unknown worker, or an expired/refused token that could not be renewed."""


class IpfsError(WorkerError):
    """An IPFS node or gateway could not deliver or store content."""


class IpfsCredentialsRefused(IpfsError):
    """The RPC API or the pinning service answered 401/403: ``variable`` names the credential to fix
    (``IPFS_API_AUTH``, ``PINATA_JWT``). The credential itself is never part of the message."""

    def __init__(self, message: str, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class InvalidCid(IpfsError, ValueError):
    """A string is not a CID the worker can verify (bad syntax, unsupported codec or hash)."""


class ContentMismatch(IpfsError):
    """Bytes served for a CID hash to a different CID: the source is broken or malicious."""

    def __init__(self, expected: str, actual: str, source: str = "") -> None:
        where = f" from {source}" if source else ""
        super().__init__(f"content{where} does not match CID {expected} (it hashes to {actual})")
        self.expected = expected
        self.actual = actual
        self.source = source


class AssetError(WorkerError):
    """The job's asset is not something the worker can render (not a .blend, unsafe archive, ...)."""


class JobSettingsError(WorkerError):
    """A job's ``required_capabilities`` asks for render settings the worker cannot honour."""


class RenderError(WorkerError):
    """Blender could not open or render the file; the message is Blender's own where it gave one."""


class RenderTimeout(RenderError):
    """The render ran past ``RENDER_TIMEOUT`` and its whole process group was killed."""


class Cancelled(WorkerError):
    """The operator stopped the worker mid-job ("Stop now"): the job stays claimed and resumable."""


class RenderCancelled(RenderError, Cancelled):
    """The operator stopped the worker while a render was running."""


class SceneRejected(RenderError):
    """The scene asks for something this worker never does for a stranger (runs Python, reads a file
    outside its job folder, exceeds a cap); checked inside Blender before the render starts."""


class AssetTooLarge(AssetError):
    """The asset is bigger than ``MAX_ASSET_MB``; every honest source would serve the same size."""
