"""The job store in Redis (``job_store=redis://host:port/db``): ``RedisJobStore``, for replicas sharing one queue.

Keys, all under ``facerecon:jobs:`` (the database number in the URL separates deployments):

- ``job:<id>``: a hash with the job's fields, its image until it finishes, then its result;
- ``queued``: a list of job ids, newest on the left (LPUSH to submit, RPOP to claim);
- ``running``: a sorted set of the ids being run, scored by when their lease runs out.

Each step that reads and then writes (the queue bound, a claim, a finish) is one Lua script, which
Redis runs atomically, so two replicas never take the same job. A process holds the jobs it claims
by a lease that its heartbeat thread renews. A job whose lease ran out (its process died or hung)
goes back to the queue at the next claim by any replica: this is SQLite's re-queue at start-up, made
safe for several live processes. Lease deadlines use the Redis server's clock, so replicas' clocks
need not agree.

An accepted job survives a restart of the service; it survives a restart of Redis only with Redis's
persistence on (``appendonly yes``, and ``appendfsync always`` to be on disk before the 202 as with
SQLite). One Redis server, not Redis Cluster: the scripts touch job keys they are not given.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import redis

from service.jobs.job import Job, JobStoreError
from service.schemas import JobStatus, Options

log = logging.getLogger("service.jobs")

PREFIX = "facerecon:jobs:"
JOB_PREFIX, QUEUED, RUNNING = PREFIX + "job:", PREFIX + "queued", PREFIX + "running"
FIELDS = ("status", "filename", "options", "created_at", "started_at", "finished_at", "media_type", "problem")

# KEYS: queued, the job's hash. ARGV: max_queued, job id, then the hash's fields and values.
SUBMIT = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('LPUSH', KEYS[1], ARGV[2])
return 1
"""

# Lua helpers shared by the scripts below. KEYS: queued, running. ARGV[1]: the job key prefix.
LEASES = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function requeue(id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HSET', ARGV[1] .. id, 'status', 'queued')
  redis.call('HDEL', ARGV[1] .. id, 'started_at', 'owner')
  -- at the claiming end: it has waited longer than anything queued since
  redis.call('RPUSH', KEYS[1], id)
end
"""

# Jobs whose lease ran out go back to the queue. ARGV: prefix. Returns how many jobs now wait.
REQUEUE_EXPIRED = LEASES + """
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now())) do requeue(id) end
return redis.call('LLEN', KEYS[1])
"""

# The given jobs, where this owner still holds them, go back to the queue. ARGV: prefix, owner, ids.
RELEASE = LEASES + """
for i = 3, #ARGV do
  if redis.call('HGET', ARGV[1] .. ARGV[i], 'owner') == ARGV[2] then requeue(ARGV[i]) end
end
"""

# The oldest queued job becomes running, held by owner. ARGV: prefix, owner, lease_s, started_at.
CLAIM = LEASES + """
local id = redis.call('RPOP', KEYS[1])
if not id then return false end
redis.call('ZADD', KEYS[2], now() + tonumber(ARGV[3]), id)
redis.call('HSET', ARGV[1] .. id, 'status', 'running', 'started_at', ARGV[4], 'owner', ARGV[2])
return id
"""

# Extends the leases of the given jobs this owner still holds. ARGV: prefix, owner, lease_s, ids.
RENEW = LEASES + """
local deadline = now() + tonumber(ARGV[3])
for i = 4, #ARGV do
  if redis.call('HGET', ARGV[1] .. ARGV[i], 'owner') == ARGV[2] then
    redis.call('ZADD', KEYS[2], 'XX', deadline, ARGV[i])
  end
end
"""

# Records a finished job, unless its lease was lost to another worker (who will record its own run).
# KEYS: the job's hash, running. ARGV: owner, job id, then fields and values. Returns 1 if recorded.
FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[1], 'image', 'owner')
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""


def pairs(fields: dict) -> list:
    """{"a": 1, "b": 2} -> ["a", 1, "b", 2], the shape HSET takes; None values are left out."""
    return [item for key, value in fields.items() if value is not None for item in (key, value)]


def job_from_hash(job_id: str, values: dict[str, bytes | None]) -> Job:
    def text(key: str) -> str | None:
        return values[key].decode() if values[key] is not None else None

    def number(key: str) -> float | None:
        return float(values[key]) if values[key] is not None else None

    return Job(id=job_id, status=JobStatus(text("status")), filename=text("filename"),
               options=Options.model_validate_json(values["options"]), created_at=number("created_at"),
               started_at=number("started_at"), finished_at=number("finished_at"), media_type=text("media_type"),
               problem=json.loads(values["problem"]) if values["problem"] else None)


class RedisJobStore:
    """Jobs in one Redis database, shared by any number of service processes."""

    def __init__(self, client: redis.Redis, max_queued: int, lease_s: float):
        self.max_queued, self.lease_s = max_queued, lease_s
        self.added = threading.Event()  # set on each submission here; other replicas' are found by polling
        self._db = client
        self._owner = uuid.uuid4().hex  # this process, as the holder of the jobs it claims
        self._held: set[str] = set()  # jobs this process runs, whose leases the heartbeat renews
        self._held_lock = threading.Lock()
        self._submit, self._requeue_expired, self._release, self._claim, self._renew, self._finish_script = (
            client.register_script(script) for script in (SUBMIT, REQUEUE_EXPIRED, RELEASE, CLAIM, RENEW, FINISH))
        self._closing = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew_leases, name="job-lease-heartbeat", daemon=True)
        self._heartbeat.start()

    @classmethod
    def open(cls, url: str, max_queued: int, lease_s: float) -> RedisJobStore:
        try:
            # Timeouts, so that a Redis that stops answering fails requests instead of hanging them.
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
            client.ping()
            store = cls(client, max_queued, lease_s)
            waiting = store.requeue_expired()
        except (redis.RedisError, ValueError) as error:
            raise JobStoreError(str(error)) from error
        if waiting:
            log.info("%d job(s) waiting in %s", waiting, url)
        return store

    def close(self) -> None:
        """Stops renewing leases and hands the jobs still running here back to the queue at once."""
        self._closing.set()
        self._heartbeat.join()
        with self._held_lock:
            held, self._held = list(self._held), set()
        if held:
            try:
                self._release(keys=[QUEUED, RUNNING], args=[JOB_PREFIX, self._owner, *held])
            except redis.RedisError:
                log.warning("could not re-queue %d running job(s); they run again when their lease ends", len(held))
        self._db.close()

    def submit(self, image: bytes, options: Options, filename: str | None) -> Job | None:
        job = Job(id=uuid.uuid4().hex, status=JobStatus.queued, filename=filename, options=options,
                  created_at=time.time())
        fields = {"status": job.status.value, "filename": filename, "options": options.model_dump_json(),
                  "created_at": job.created_at, "image": image}
        accepted = self._submit(keys=[QUEUED, JOB_PREFIX + job.id], args=[self.max_queued, job.id, *pairs(fields)])
        if accepted:
            self.added.set()
        return job if accepted else None

    def get(self, job_id: str) -> Job | None:
        values = self._db.hmget(JOB_PREFIX + job_id, FIELDS)
        return job_from_hash(job_id, dict(zip(FIELDS, values))) if values[0] is not None else None

    def queued(self) -> int:
        return self._db.llen(QUEUED)

    def result(self, job_id: str) -> bytes | None:
        return self._db.hget(JOB_PREFIX + job_id, "result")

    def requeue_expired(self) -> int:
        """Jobs whose worker stopped renewing their lease go back to the queue; returns how many now wait."""
        return self._requeue_expired(keys=[QUEUED, RUNNING], args=[JOB_PREFIX])

    def claim(self) -> tuple[Job, bytes] | None:
        self.requeue_expired()
        job_id = self._claim(keys=[QUEUED, RUNNING], args=[JOB_PREFIX, self._owner, self.lease_s, time.time()])
        if job_id is None:
            return None
        job_id = job_id.decode()
        with self._held_lock:
            self._held.add(job_id)
        *values, image = self._db.hmget(JOB_PREFIX + job_id, [*FIELDS, "image"])
        return job_from_hash(job_id, dict(zip(FIELDS, values))), image

    def succeed(self, job_id: str, body: bytes, media_type: str) -> None:
        self._finish(job_id, status=JobStatus.succeeded.value, result=body, media_type=media_type)

    def fail(self, job_id: str, problem: dict) -> None:
        self._finish(job_id, status=JobStatus.failed.value, problem=json.dumps(problem))

    def _finish(self, job_id: str, **fields) -> None:
        fields["finished_at"] = time.time()
        recorded = self._finish_script(keys=[JOB_PREFIX + job_id, RUNNING], args=[self._owner, job_id, *pairs(fields)])
        with self._held_lock:
            self._held.discard(job_id)
        if not recorded:
            log.warning("job %s: its lease ran out during the run and another worker took it; this run is dropped",
                        job_id)

    def _renew_leases(self) -> None:
        # Three renewals per lease: one lost to a slow or briefly unreachable Redis does not lose the job.
        while not self._closing.wait(self.lease_s / 3):
            with self._held_lock:
                held = list(self._held)
            if not held:
                continue
            try:
                self._renew(keys=[QUEUED, RUNNING], args=[JOB_PREFIX, self._owner, self.lease_s, *held])
            except redis.RedisError:
                log.exception("could not renew the leases of %d running job(s)", len(held))
