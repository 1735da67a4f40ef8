"""Named constants: Redis key patterns, default TTLs, pool sizes and schema facts.

One module so a reader finds every magic value in one place (as arq's ``constants.py``).
"""

from __future__ import annotations

__all__ = [
    "MAX_VERDICTS",
    "MAX_TENANTS",
    "HS_CODE_KEY",
    "HS_SEARCH_KEY",
    "RULE_ID_KEY",
    "RULES_AGREEMENT_KEY",
    "ASSESSMENT_KEY",
    "VERDICT_KEY",
    "DASHBOARD_KEY",
    "ROUTE_REPORT_KEY",
    "TRADE_ROUTE_KEY",
    "JOB_QUEUE_PREFIX",
    "JOB_KEY",
    "GENERATION_KEY",
    "ENTITY_PREFIXES",
    "DEFAULT_TTL",
    "TTL_HS_CODES",
    "TTL_RULES",
    "TTL_ASSESSMENTS",
    "TTL_VERDICTS",
    "TTL_REPORTS",
    "REDIS_MAX_CONNECTIONS",
    "MAX_CONCURRENT_JOBS",
    "BASELINE_INDEX_COUNT",
    "MIGRATED_INDEX_COUNT",
    "PERFORMANCE_MIGRATION",
]

#: Key of one HS code lookup: ``hs:code:{code}``.
HS_CODE_KEY = "hs:code:{code}"
#: Key of one HS description search result: ``hs:search:{query}:{limit}``.
HS_SEARCH_KEY = "hs:search:{query}:{limit}"
#: Key of one rule by its id: ``rule:id:{rule_id}``.
RULE_ID_KEY = "rule:id:{rule_id}"
#: Key of the rule list of one agreement: ``rules:agreement:{code}``.
RULES_AGREEMENT_KEY = "rules:agreement:{code}"
#: Key of one assessment result: ``assessment:{rule_id}:{hs_code}:{origin}:{dest}``.
ASSESSMENT_KEY = "assessment:{rule_id}:{hs_code}:{origin}:{dest}"
#: Key of one verdict: ``verdict:{evaluation_id}``.
VERDICT_KEY = "verdict:{evaluation_id}"
# The three aggregate reads below are not in the spec's key list: they are the queries that still
# reach PostgreSQL under the load mix once the spec's caching is on (README, "Where we differ from the spec").
#: Key of one tenant's dashboard: ``report:dashboard:{tenant_id}:{days}:{until}`` (``until`` is ``now`` or a moment).
DASHBOARD_KEY = "report:dashboard:{tenant_id}:{days}:{until}"
#: Key of one tenant's trade-route report: ``report:routes:{tenant_id}:{date_from}:{date_to}:{limit}``.
ROUTE_REPORT_KEY = "report:routes:{tenant_id}:{date_from}:{date_to}:{limit}"
#: Key of one trade route's analysis (all tenants): ``report:trade-route:{export_country}:{import_country}``.
TRADE_ROUTE_KEY = "report:trade-route:{export_country}:{import_country}"
#: Prefix of every key of one job queue: ``{<namespace>jobs}:`` (e.g. ``{psra:jobs}:``, ``{jobs}:`` with no
#: namespace). The braces make the whole ``<namespace>jobs`` a Redis Cluster hash tag, so all of one queue's
#: keys share one slot (its Lua scripts stay single-slot) while queues of other namespaces land elsewhere.
JOB_QUEUE_PREFIX = "{{{namespace}jobs}}:"
#: Key of one async job's state hash, after the queue's prefix: ``job:{job_id}`` (``{<namespace>jobs}:job:{job_id}``).
JOB_KEY = "job:{job_id}"
#: Key of one entity's invalidation generation (a random token; invalidating deletes it): ``gen:{entity}``.
GENERATION_KEY = "gen:{entity}"

#: Entity name -> the key prefix its keys start with (used for stats and invalidation).
ENTITY_PREFIXES: dict[str, tuple[str, ...]] = {
    "hs_codes": ("hs:",),
    "rules": ("rule:", "rules:"),
    "assessments": ("assessment:",),
    "verdicts": ("verdict:",),
    "reports": ("report:",),
}

#: CACHE_DEFAULT_TTL: seconds a cache entry lives when no entity TTL applies.
DEFAULT_TTL = 3600
#: HS codes are static reference data: one hour.
TTL_HS_CODES = 3600
#: Rules change now and then: thirty minutes.
TTL_RULES = 1800
#: Assessment results depend on live data: five minutes.
TTL_ASSESSMENTS = 300
#: Verdicts are history and never change: one hour.
TTL_VERDICTS = 3600
#: Aggregates over live verdicts (dashboard, trade-route report and analysis): one minute, so a
#: summary is at most a minute behind the verdicts it counts.
TTL_REPORTS = 60

#: The spec's connection pool size for the cache client.
REDIS_MAX_CONNECTIONS = 50
#: The spec's MAX_CONCURRENT_JOBS default.
MAX_CONCURRENT_JOBS = 10

# The job queue's defaults (psra_bench.jobs; `psra-bench worker` flags).
#: Seconds a running job's lease lasts without a heartbeat (heartbeats come every lease/4).
DEFAULT_LEASE_SECONDS = 5.0
#: Workers a job may lose before it is FAILED ("worker lost N times").
DEFAULT_MAX_ATTEMPTS = 3
#: Upper bound on how long a job may wait (or sit with no live worker) before its hash expires.
DEFAULT_MAX_AGE_SECONDS = 86_400
#: Largest ttl_seconds accepted by submit: thirty days.
MAX_TTL_SECONDS = 30 * 86_400
#: Seconds an idle worker waits for a pub/sub wake-up before polling again.
DEFAULT_POLL_INTERVAL = 0.5
#: Seconds a stopping worker lets in-flight jobs finish before giving them back to the queue.
DEFAULT_GRACE_SECONDS = 10.0
#: Seconds between two sweeps of a worker (repairs of job state that became inconsistent).
DEFAULT_SWEEP_SECONDS = 60.0
#: Largest timeout_seconds a job may have: one day.
MAX_JOB_TIMEOUT_SECONDS = 86_400

#: Indexes in schema public before the performance migration (the spec's "Before: 20").
BASELINE_INDEX_COUNT = 20
#: Indexes in schema public after it (the spec's "After: 46").
MIGRATED_INDEX_COUNT = 46
#: Name of the spec's index migration, as recorded in psra_bench.schema_migrations.
PERFORMANCE_MIGRATION = "0001_performance_indexes"


#: The most synthetic verdicts any command, notebook or report seeds or measures on (one limit, every caller).
MAX_VERDICTS = 100_000_000

#: The most tenants a seeded dataset spreads its verdicts over.
MAX_TENANTS = 100_000
