"""The kit's own figures of a campaign, kept in the shared Redis database.

A HypoFuzz worker runs the kit's property tests outside pytest's session (it collects
them and calls them), so nothing prints :data:`pvframe.testing.conformance.STATS` at the
end. With ``PVFRAME_HYPOTHESIS_REDIS`` set, every process running the generated-program
tests publishes its figures per backend into the same Redis (at most every
:data:`PUBLISH_S` seconds, and its last ones at exit): programs run, ops, CPU seconds in
the oracle, divergences, the op kinds drawn and the paravirt hooks the backend's runs
called. :func:`read` gives them back per backend and worker, and
:mod:`pvframe.tools.campaign_report` adds them up into the campaign's table.

Layout: one Redis hash per backend, ``pvframe-kit-stats:BACKEND``, one field per worker
process (``host:pid``), its value the JSON of its figures (each process overwrites its own
field: the figures are running totals).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pvframe.testing.kit_stats import KitStats

PREFIX = "pvframe-kit-stats:"
#: seconds between two publications of one process's figures
PUBLISH_S = 5.0

_last: dict[str, float] = {}
_client: Any = None
_registered = False


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def to_json(stats: KitStats) -> str:
    return json.dumps({
        "examples": stats.examples, "ops": stats.ops, "seconds": stats.seconds,
        "divergences": stats.divergences, "coverage": dict(stats.coverage),
        "hooks": dict(stats.hooks), "time": time.time(),
    })


def publish(client: Any, backend: str, stats: KitStats, worker: str | None = None) -> None:
    """Write ``stats`` (this worker's running totals for ``backend``) into Redis."""
    client.hset(PREFIX + backend, worker or worker_id(), to_json(stats))


def maybe_publish(backend: str, stats: KitStats) -> None:
    """Publish when ``PVFRAME_HYPOTHESIS_REDIS`` is set and :data:`PUBLISH_S` passed since
    this process last did for ``backend`` (and once more at exit). A Redis that does not
    answer costs the run nothing but the figures."""
    from pvframe.testing.pytest_plugin import REDIS_ENV

    url = os.environ.get(REDIS_ENV)
    if not url:
        return
    now = time.monotonic()
    if now - _last.get(backend, -PUBLISH_S) < PUBLISH_S:
        return
    _last[backend] = now
    global _client, _registered
    try:
        if _client is None:
            import redis

            _client = redis.Redis.from_url(url)
        publish(_client, backend, stats)
    except Exception:  # figures are best effort; the run goes on
        return
    if not _registered:
        _registered = True
        atexit.register(_publish_all)


def _publish_all() -> None:
    from pvframe.testing.kit_stats import STATS

    for backend, stats in STATS.items():
        try:
            publish(_client, backend, stats)
        except Exception:  # at exit, best effort
            return


def read(client: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """backend -> worker -> its last published figures."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in client.scan_iter(match=(PREFIX + "*").encode()):
        backend = key.decode()[len(PREFIX):]
        out[backend] = {w.decode(): json.loads(v) for w, v in client.hgetall(key).items()}
    return out


__all__ = ["PREFIX", "PUBLISH_S", "maybe_publish", "publish", "read", "worker_id"]
