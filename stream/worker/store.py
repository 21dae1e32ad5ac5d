"""The worker's Redis state: the latest lab results per patient, alert snapshots and each bed's saved state.

Key layout (Redis, one hash per patient)::

    mirage:labs:{patient_id}            HASH  field = LOINC code
        value = JSON {"v": canonical value, "u": canonical unit, "o": observed_ns,
                      "r": reported_ns or null, "raw": value as sent, "ru": unit as sent}
    TTL of the hash = 2 x lab_staleness_s, refreshed by every write.
    mirage:snapshot:{alert_id}          STRING  PNG of the window that started an MI episode (TTL 24 h)
    mirage:policy:{group}:{bed_id}      STRING  JSON {"policy": alert-policy state, "technical":
                                        technical-alarm state} of the bed (TTL 24 h), so a restarted
                                        worker continues episodes with the same ids; per consumer
                                        group (one deployment), so two deployments sharing a Redis
                                        never continue each other's episodes

Writes come from the labs topic (:class:`stream.core.schema.LabResult`). Results can arrive out of
order (a delayed interface, a replay); a Lua script compares observation times inside Redis so an
older result never overwrites a newer one, atomically and without a WATCH round trip.

**No lab lost.** The labs agent stores each result with :meth:`LabCache.write_retrying`: a Redis
error is retried with capped exponential backoff (0.1 s, 0.2 s, ... at most 5 s between tries) for
as long as it takes, and only then is the event acknowledged, so its offset is committed only once
Redis holds it (at-least-once; a worker stopped meanwhile re-reads it). Re-writing a result is
harmless (newer wins, same value). A result that can never be stored (a data error, not an
outage) is not retried: the caller dead-letters it.

Reads are one round trip for a whole micro-batch (a pipeline of HGETALLs). A result older than
``lab_staleness_s`` (by observation time, against the window's end) is not given to the model
and is reported as an advisory (``stale_lab:89579-7``). When Redis cannot be reached the batch
is scored without labs (FiLM is then the identity) and alerts carry ``labs_available=False``:
a lab outage must never stop ECG monitoring.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable, Iterable, Mapping

from engine.labs import lab_feature
from stream.core.labs import PatientLabs, empty_labs, select_labs
from stream.core.schema import LabResult

log = logging.getLogger(__name__)

KEY_PREFIX = "mirage:labs:"
LAB_RETRY_BASE_S = 0.1
LAB_RETRY_CAP_S = 5.0
# Errors of the data, not of Redis: retrying cannot help.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, LookupError)


def backoff_s(attempt: int, base_s: float = LAB_RETRY_BASE_S, cap_s: float = LAB_RETRY_CAP_S) -> float:
    """Wait before try ``attempt + 1`` after ``attempt`` failed ones (1 -> base, doubling, capped)."""
    return min(cap_s, base_s * 2.0 ** (max(1, attempt) - 1))

# KEYS[1] = hash, ARGV = loinc, payload json, observed_ns, ttl_s. Returns 1 if written, 0 if older.
_NEWER_WINS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and obj['o'] and tonumber(obj['o']) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def lab_key(patient_id: str) -> str:
    """The Redis key of a patient's labs."""
    return f"{KEY_PREFIX}{patient_id}"


class LabCache:
    """Newer-wins lab store over a ``redis.asyncio`` client.

    Args:
        client: a ``redis.asyncio.Redis`` (or compatible) client.
        staleness_s: results older than this are not used (``Settings.lab_staleness_s``).
    """

    def __init__(self, client: Any, staleness_s: float) -> None:
        self.client = client
        self.staleness_s = float(staleness_s)
        self.ttl_s = max(1, int(2 * staleness_s))
        self._script = client.register_script(_NEWER_WINS)
        self.errors = 0

    async def write(self, lab: LabResult) -> bool:
        """Store ``lab`` unless a newer result for the same patient and LOINC is there.

        Returns True when written, False when an equal-or-newer one was kept.
        """
        feat = lab_feature(lab.loinc)
        payload = json.dumps({"v": lab.canonical_value(), "u": feat.unit, "o": int(lab.observed_ns),
                              "r": lab.reported_ns, "raw": lab.value, "ru": lab.unit}, separators=(",", ":"))
        written = await self._script(keys=[lab_key(lab.patient_id)], args=[feat.loinc, payload, int(lab.observed_ns), self.ttl_s])
        return bool(int(written))

    async def write_retrying(self, lab: LabResult, *, base_s: float = LAB_RETRY_BASE_S,
                             cap_s: float = LAB_RETRY_CAP_S,
                             on_error: Callable[[BaseException, int], Any] | None = None,
                             sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> int:
        """:meth:`write` until Redis has taken ``lab``; return the number of tries.

        Every failed try calls ``on_error(exc, tries_so_far)`` and waits :func:`backoff_s`. No
        limit on the tries: the lab must not be lost, and the caller acknowledges it only after
        this returns (a stopping worker cancels the wait; the lab is then re-read on restart).

        Raises:
            ValueError, TypeError, LookupError: the lab itself cannot be stored (not retried).
        """
        tries = 0
        while True:
            tries += 1
            try:
                await self.write(lab)
                return tries
            except PERMANENT_ERRORS:
                raise
            except Exception as exc:  # connection refused, timeout, Redis loading or out of memory
                self.errors += 1
                if on_error is not None:
                    on_error(exc, tries)
                await sleep(backoff_s(tries, base_s, cap_s))

    async def read_batch(self, requests: Iterable[tuple[str, int]]) -> list[PatientLabs]:
        """Labs for each ``(patient_id, at_ns)`` in one round trip; labs unavailable on a Redis error."""
        reqs = list(requests)
        if not reqs:
            return []
        patients = sorted({p for p, _ in reqs})
        try:
            pipe = self.client.pipeline(transaction=False)
            for p in patients:
                pipe.hgetall(lab_key(p))
            results = await pipe.execute()
        except Exception as exc:  # any client/connection failure: score without labs
            self.errors += 1
            log.warning("lab cache unavailable (%s): scoring without labs", type(exc).__name__)
            return [empty_labs(available=False) for _ in reqs]
        stored = dict(zip(patients, results))
        return [select_labs(stored.get(p) or {}, at, self.staleness_s) for p, at in reqs]

    async def store_snapshot(self, alert_id: str, png: bytes, ttl_s: int = 24 * 3600) -> None:
        """Store an alert's ECG-paper snapshot under ``mirage:snapshot:{alert_id}``."""
        await self.client.set(f"mirage:snapshot:{alert_id}", png, ex=ttl_s)


SNAPSHOT_PREFIX = "mirage:snapshot:"
POLICY_PREFIX = "mirage:policy:"
POLICY_TTL_S = 24 * 3600


class PolicyStateStore:
    """Per-bed alarm state (policy + technical) in Redis (``mirage:policy:{namespace}:{bed_id}``),
    batched, failure-tolerant. The namespace is the worker's consumer group.

    A Redis outage only costs continuity after a restart (an episode may restart with a new id);
    it never stops scoring.
    """

    def __init__(self, client: Any, namespace: str = "") -> None:
        self.client = client
        self.prefix = f"{POLICY_PREFIX}{namespace}:" if namespace else POLICY_PREFIX
        self.errors = 0

    async def load(self, bed_ids: Iterable[str]) -> dict[str, dict]:
        beds = list(bed_ids)
        if not beds:
            return {}
        try:
            raw = await self.client.mget([self.prefix + b for b in beds])
        except Exception as exc:
            self.errors += 1
            log.warning("policy state unavailable (%s)", type(exc).__name__)
            return {}
        out: dict[str, dict] = {}
        for bed, value in zip(beds, raw):
            if value:
                try:
                    out[bed] = json.loads(value)
                except (ValueError, TypeError):
                    log.warning("ignoring malformed saved policy state")
        return out

    async def save(self, states: Mapping[str, dict | None]) -> bool:
        """Write (or delete, for None) each bed's state in one round trip."""
        if not states:
            return True
        try:
            pipe = self.client.pipeline(transaction=False)
            for bed, st in states.items():
                if st is None:
                    pipe.delete(self.prefix + bed)
                else:
                    pipe.set(self.prefix + bed, json.dumps(st, separators=(",", ":")), ex=POLICY_TTL_S)
            await pipe.execute()
            return True
        except Exception as exc:
            self.errors += 1
            log.warning("could not save policy state (%s)", type(exc).__name__)
            return False
