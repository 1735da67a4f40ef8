"""The shapes of experiment 04's results (the load test), read by the report: steps, capacity, configurations."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

__all__ = [
    "OverallRow", "LoadOverall", "GeneratorFlags", "LoadStep", "UsersSupported", "OpenModel", "CapacityStep",
    "Capacity", "ConfigurationResult", "LoadParameters", "LoadTestResult", "EndpointLatency", "ReplayComparison",
    "LogCapacity", "ReplayResult",
]  # fmt: skip


class OverallRow(TypedDict):
    """One row of the spec's "Overall System Performance" table, measured (``overall_table``)."""

    metric: str
    unit: str
    before: float | None
    after: float | None
    change_pct: float | None
    improvement: str | None
    better: str
    before_config: str
    after_config: str
    n_before: int | None
    n_after: int | None
    note: str


class LoadOverall(TypedDict, total=False):
    """All requests of one load window, from its HdrHistogram (a window without requests has only ``n``)."""

    n: int
    requests: int
    failures: int
    failure_rate: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    #: A distribution-free 95 % CI of p95 (order statistics of the histogram).
    p95_ci_ms: list[float] | None
    p99_ms: float | None
    stdev_ms: float | None


class GeneratorFlags(TypedDict):
    """The load generator's CPU in a window and whether it was saturated (``load.results.generator_flags``)."""

    cpu_cores: float | None
    busiest_process_cores: float | None
    saturated: bool | None


class LoadStep(TypedDict):
    """One step of the closed-model step load: its users, every request's summary, resources, the generator."""

    users: int
    overall: LoadOverall
    endpoints: NotRequired[dict[str, LoadOverall]]
    #: Resource groups ("api", "postgres", "redis", "generator") of the step's window (added after the run).
    resources: NotRequired[dict[str, Any]]
    generator: NotRequired[GeneratorFlags]
    cpu_ms_per_request: NotRequired[dict[str, float | None]]


class UsersSupported(TypedDict):
    """The highest user count that met the SLO in the step load (``load.results.users_supported``)."""

    users_supported: int | None
    first_failing_users: int | None
    slo_p95_ms: float
    max_failure_rate: float
    reason: str
    generator_limited: bool
    #: True when every step met the SLO: the true limit is higher.
    lower_bound: bool


class OpenModel(TypedDict, total=False):
    """The open-model run of a configuration (``load.open_model``): arrivals, latency from intended start."""

    scheduled: int
    late: int
    dropped: int
    late_fraction: float
    drop_fraction: float
    measured_arrivals: int
    target_rps: float
    achieved_rps: float
    completed_rps: float
    #: "overall" (and per endpoint) latency summaries measured from each request's intended start.
    latency: dict[str, LoadOverall]
    #: The highest arrival rate meeting the SLO (req/s in place of users), when the plan searched it.
    capacity: Capacity | None


class CapacityStep(TypedDict):
    """One step of a capacity search (``load.capacity``): why it ran, whether it met the SLO, its p95 with CI and n."""

    users: int
    kind: str
    passed: bool
    p95_ms: float | None
    p95_ci_ms: list[float] | None
    n: int
    failure_rate: float | None


class Capacity(TypedDict):
    """Users supported as a bracket (``load.capacity.capacity``): ``low`` met the SLO, ``high`` did not."""

    low: int | None
    #: None when every step met the SLO (``low`` is then a lower bound).
    high: int | None
    bracket: float
    within_bracket: bool
    confirmed: bool
    slo_p95_ms: float
    steps: list[CapacityStep]


class ConfigurationResult(TypedDict):
    """One load-test configuration end to end (``load.experiment.run_configuration``)."""

    name: NotRequired[str]
    indexes: NotRequired[bool]
    cache: NotRequired[bool]
    index_count: NotRequired[int]
    migration: NotRequired[dict[str, Any]]
    cache_namespace: NotRequired[str]
    server_exit_code: NotRequired[int | None]
    #: The headline step (the one with ``users`` users; None when the step load stopped before it).
    closed: NotRequired[LoadStep | None]
    steps: list[LoadStep]
    users_supported: NotRequired[UsersSupported]
    #: The capacity search's bracket (a run with a fixed list of steps has none).
    capacity: NotRequired[Capacity | None]
    locust: NotRequired[dict[str, Any]]
    open: NotRequired[OpenModel]
    cache_stats: NotRequired[dict[str, Any] | None]
    timings_s: NotRequired[dict[str, float]]


class LoadParameters(TypedDict, total=False):
    """The load test's parameters as run (``run_load``)."""

    users: int
    spawn_rate: float
    duration_s: float
    arrival_rate: float
    configurations: list[str]
    slo_p95_ms: float
    quick: bool
    steps: list[int]
    step_s: float
    #: The step load was a capacity search on ``steps`` (grid steps far from the crossing measured ``short_step_s``).
    search: bool
    short_step_s: float
    settle_s: float
    think_s: list[float]
    processes: int
    tenants: int
    seed: int
    open_max_in_flight: int
    max_failure_rate: float
    saturation_cores: float


class LoadTestResult(TypedDict):
    """``04_load_test.json``: every configuration's load test and the summary table (``run_load``)."""

    parameters: LoadParameters
    configurations: dict[str, ConfigurationResult]
    table: list[OverallRow]
    started_at: float
    seconds: float
    fingerprint: dict[str, Any] | None
    #: One sentence, or (from older runs) a mapping of named sentences.
    method: str | dict[str, Any]


class EndpointLatency(TypedDict):
    """One endpoint's replayed requests: n measured, failures, percentiles in ms (None when n is 0)."""

    n: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class ReplayComparison(TypedDict):
    """The ``replay`` object of ``04_load_replay.json`` (``load.replay.replay_summary``)."""

    mode: str
    speed: float
    bucket_s: float
    recorded_requests: int
    replayed_requests: int
    #: endpoint template -> share of the requests to this API's routes (unmatched ones are in neither)
    recorded_share: dict[str, float]
    replayed_share: dict[str, float]
    #: requests per second of recorded time, per bucket of recorded time
    recorded_rate: list[float]
    replayed_rate: list[float]
    #: "METHOD path" of a route this API does not have -> requests (never sent)
    unmatched: dict[str, int]
    endpoints: dict[str, EndpointLatency]
    lateness: dict[str, Any] | None
    log: dict[str, Any]


class LogCapacity(TypedDict):
    """Users supported at a recorded log's own mix (``load.replay.log_capacity``): the bracket and every step."""

    capacity: Capacity
    steps: list[LoadStep]
    #: users (headline), grid, slo_p95_ms, duration_s, short_step_s, spawn_rate, think_s
    parameters: dict[str, Any]
    locust: dict[str, Any]


class ReplayResult(TypedDict):
    """``04_load_replay.json``: a recorded log replayed (``load.replay.run_replay``), and its capacity when searched."""

    #: The --url replayed against (password redacted); None: an API this tool started.
    url: str | None
    #: The configuration of the API this tool started (e.g. "both"); None for a --url.
    configuration: str | None
    parameters: dict[str, Any]
    replay: ReplayComparison
    run: dict[str, Any]
    capacity: LogCapacity | None
    files: dict[str, str]
    started_at: float
    seconds: float
