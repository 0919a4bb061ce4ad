"""Where the flows run: the Ray cluster they attach to and the Prefect API they report to.

Both checks fail fast with a message that says what to do, instead of hanging in a client's retry loop:

* :func:`check_ray_address` opens a TCP connection to the given Ray address (GCS ``host:port`` or Ray client
  ``ray://host:port``) with a few seconds' timeout before ``ray.init`` is called; ``ray.init`` on an address that
  does not answer otherwise retries for about a minute.
* :func:`prefect_api` probes ``PREFECT_API_URL``'s ``/health``; when a configured server is down it either raises or,
  when fallback is allowed, logs a WARNING and switches this process to Prefect's ephemeral API (a temporary local
  server that lives as long as the run). With no URL configured the ephemeral API is used and logged at INFO.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

__all__ = ["RayUnavailableError", "PrefectUnavailableError", "check_ray_address", "ray_runtime", "prefect_api"]

RAY_CONNECT_TIMEOUT_S = 5.0
PREFECT_HEALTH_TIMEOUT_S = 3.0


class RayUnavailableError(ConnectionError):
    """The Ray address given does not answer, or is not a Ray address ``ray.init`` accepts."""


class PrefectUnavailableError(ConnectionError):
    """``PREFECT_API_URL`` points at a server that does not answer and the ephemeral fallback is disabled."""


def _host_port(address: str) -> tuple[str, int]:
    """``"ray://h:p"`` or ``"h:p"`` -> ``(h, p)``. Raises RayUnavailableError for anything else."""
    if address.startswith(("http://", "https://")):
        raise RayUnavailableError(
            f"Ray address {address!r} is a dashboard (job submission) URL; the flows need the cluster address: "
            f"'HOST:6379' (GCS), 'ray://HOST:10001' (Ray client) or 'auto'. To run on a cluster through its "
            f"dashboard use `ray job submit --address {address} -- flip run ...`."
        )
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if not parts.hostname or parts.port is None:
        raise RayUnavailableError(
            f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT, 'auto' or 'local'"
        )
    return parts.hostname, parts.port


def check_ray_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout_s`` seconds when ``address`` does not accept TCP connections.

    ``"auto"`` and ``"local"`` are left to ``ray.init`` (they resolve locally and fail fast on their own).

    Raises:
        RayUnavailableError: naming the address, the socket error and how to start or omit a cluster.
    """
    if address in ("auto", "local"):
        return
    host, port = _host_port(address)
    hint = (f"Start one with `ray start --head --port {port}` (or `ray up cluster/gpu-cluster.yaml`), fix "
            f"--ray-address, or leave it out to start a local Ray in-process.")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayUnavailableError(f"Ray cluster at {address!r} does not answer ({host}:{port}: "
                                  f"{exc or type(exc).__name__}, timeout {timeout_s:g} s). {hint}") from None
    if not address.startswith("ray://"):
        problem = _gcs_problem(f"{host}:{port}", timeout_s)
        if problem:
            raise RayUnavailableError(f"{host}:{port} accepts connections but is not a Ray cluster's GCS "
                                      f"({problem}). {hint}")


def _gcs_problem(address: str, timeout_s: float) -> str | None:
    """None when a Ray GCS answers at ``address`` within ``timeout_s``; else why not.

    Something else listening on the port (or a proxy) would otherwise make ``ray.init`` retry for ~30 s. The probe
    runs in a daemon thread so a peer that never answers cannot hold the caller past ``timeout_s``.
    """
    import threading

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            from ray._raylet import GcsClient

            GcsClient(address=address)  # fetches the cluster id: one RPC to the GCS
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a usable GCS"
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="ray-gcs-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


@contextlib.contextmanager
def ray_runtime(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[str]:
    """Make sure this process is connected to Ray for the duration of the block.

    Order: an already-initialised Ray is reused (subflows share their parent's); else ``address``; else the
    ``RAY_ADDRESS`` environment variable (set by Ray for ``ray job submit`` drivers); else a local Ray started
    in-process on 127.0.0.1 (``flip_core.train.launch.start_local_ray``: ``num_cpus`` CPUs, default all, no
    dashboard). Ray is shut down on exit only when this block started it.

    Yields:
        A description of the cluster used, for logs (``"local (in-process)"``, the address, or ``"existing"``).

    Raises:
        RayUnavailableError: from :func:`check_ray_address`.
    """
    import ray

    if ray.is_initialized():
        yield "existing"
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        check_ray_address(address)
        ray.init(address=address, log_to_driver=True)
        where = address
    else:
        # Pins the GCS port and puts RAY_ADDRESS into the job's runtime env, so Ray Train's helper actors find this
        # cluster even when other Ray clusters run on the machine (see start_local_ray).
        from flip_core.train.launch import start_local_ray

        where = f"local (in-process, {start_local_ray(num_cpus or os.cpu_count() or 1)})"
    try:
        yield where
    finally:
        ray.shutdown()


def _api_healthy(url: str, timeout_s: float) -> str | None:
    """None when ``GET {url}/health`` answers 200, else a short reason."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout_s) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc)) or type(exc).__name__


@contextlib.contextmanager
def prefect_api(*, allow_ephemeral: bool = True, timeout_s: float = PREFECT_HEALTH_TIMEOUT_S) -> Iterator[str]:
    """Choose the Prefect API for the runs started inside the block.

    Yields:
        The API URL in use, or ``"ephemeral"``.

    Raises:
        PrefectUnavailableError: the configured server does not answer and ``allow_ephemeral`` is False.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if not url:
        logger.info("PREFECT_API_URL is not set: using Prefect's ephemeral API (a temporary local server for this "
                    "run; the run is not kept on any dashboard)")
        yield "ephemeral"
        return
    reason = _api_healthy(url, timeout_s)
    if reason is None:
        yield url
        return
    if not allow_ephemeral:
        raise PrefectUnavailableError(
            f"Prefect server at {url} does not answer ({reason}). Start it with `prefect server start --host "
            f"127.0.0.1`, unset PREFECT_API_URL, or drop --require-prefect-server to fall back to the ephemeral API."
        )
    logger.warning("Prefect server at %s does not answer (%s): FALLING BACK to Prefect's ephemeral API; this run "
                   "will not appear on that server's dashboard (use --require-prefect-server to fail instead)",
                   url, reason)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield "ephemeral"
