"""The request mix of the load tests, shared by the Locust users and the open-model driver.

A :class:`Workload` turns a request *kind* (HS lookup, search, rules, assessment, history,
dashboard, report, job submit...) into a concrete :class:`RequestSpec` against the PSRA API,
drawing parameters with the skew a real service sees, from the seeded data:

* tenants follow the same Zipf law (exponent 1.1 over :func:`psra_bench.db.seed.tenant_ids`) that
  the seeder used, so the busiest API tenants are also the ones with the most verdicts;
* HS codes, search words, trade routes and assessed products are Zipf-distributed over a fixed
  shuffle of the reference data, so a hot set exists (what a cache can exploit) next to a long
  tail (what it cannot);
* assessment bodies come from a pool of products that pass the engine's validation (checked
  with :func:`psra_bench.psra.assessment.assess` when the pool is built), so a request fails only
  when the server does.

All draws take a ``random.Random``; the same seed gives the same sequence of requests.

Every tenant request carries its tenant's ``X-Tenant-ID``; the cross-tenant kinds
(:data:`OPERATOR_KINDS`) carry ``Authorization: Bearer <admin_token>`` when the workload is given the
server's operator token (without one the server answers them 404/401, counted as failures).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from psra_bench.db.reference import hs_rows, rules
from psra_bench.db.seed import DEFAULT_END, EU_MEMBERS, tenant_ids
from psra_bench.exceptions import InputError, ParameterError

__all__ = [
    "KIND_WEIGHTS",
    "ENDPOINT_NAMES",
    "DASHBOARD",
    "REPORT",
    "OPERATOR_KINDS",
    "RequestSpec",
    "ZipfPicker",
    "Workload",
    "search_words",
]

#: Request kind -> relative weight in the mix (read-heavy, like the service the spec describes).
KIND_WEIGHTS: dict[str, int] = {
    "hs_lookup": 22,
    "hs_search": 8,
    "rules_list": 6,
    "rule_by_id": 4,
    "assessment": 10,
    "tenant_history": 8,
    "recent_verdicts": 3,
    "dashboard": 8,
    "trade_route_report": 3,
    "trade_route": 3,
    "duplicate_check": 4,
    "job_submit": 2,
}

#: Request kind -> the endpoint name statistics are grouped by ("METHOD /path/[param]").
ENDPOINT_NAMES: dict[str, str] = {
    "hs_lookup": "GET /api/hs/[code]",
    "hs_search": "GET /api/hs/search",
    "rules_list": "GET /api/rules",
    "rule_by_id": "GET /api/rules/[rule_id]",
    "assessment": "POST /api/assessments",
    "tenant_history": "GET /api/tenants/[tid]/verdicts",
    "recent_verdicts": "GET /api/verdicts/recent",
    "dashboard": "GET /api/tenants/[tid]/dashboard",
    "trade_route_report": "GET /api/tenants/[tid]/trade-route-report",
    "trade_route": "GET /api/trade-routes/[exp]/[imp]",
    "duplicate_check": "GET /api/tenants/[tid]/duplicates/[hash]",
    "job_submit": "POST /api/jobs/assessment/submit",
    "job_status": "GET /api/jobs/[id]/status",
}
#: Request kinds of the cross-tenant (operator-only) routes.
OPERATOR_KINDS = frozenset({"recent_verdicts", "trade_route"})
#: Endpoint name of the spec's "Dashboard Load Time" row.
DASHBOARD = ENDPOINT_NAMES["dashboard"]
#: Endpoint name of the spec's "Report Generation" row.
REPORT = ENDPOINT_NAMES["trade_route_report"]

_STOPWORDS = frozenset(
    "other with than their whether parts thereof including being such which from have those more this "
    "whose same used kind kinds made only into also type types weight form forms like part each".split()
)
_THIRD_COUNTRIES = ("CN", "VN", "IN", "TR", "KR", "TW", "TH", "BR", "ID", "MY")
#: The date every pooled assessment is made for (inside every active rule's validity).
ASSESSMENT_DATE = "2026-06-01"


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request: method, path with query string, stats name, headers and JSON body."""

    kind: str
    method: str
    path: str
    name: str
    #: Not in repr: it may hold the operator token.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Mapping[str, Any] | None = None


class ZipfPicker:
    """Draws items with probability proportional to 1 / rank**s (rank 1 = first item)."""

    def __init__(self, items: Sequence[Any], s: float = 1.0) -> None:
        if not items:
            raise ParameterError("items", items, "a non-empty sequence to draw from")
        self.items = list(items)
        self.cum = list(itertools.accumulate(1.0 / (k**s) for k in range(1, len(self.items) + 1)))

    def pick(self, rng: random.Random) -> Any:
        """One item."""
        return self.items[min(bisect.bisect_left(self.cum, rng.random() * self.cum[-1]), len(self.items) - 1)]

    def probability(self, index: int) -> float:
        """Probability of the item at ``index``."""
        low = self.cum[index - 1] if index else 0.0
        return (self.cum[index] - low) / self.cum[-1]


@cache
def search_words(limit: int = 200) -> tuple[str, ...]:
    """The most frequent words of the HS descriptions (what users type into the search box)."""
    words: Counter[str] = Counter()
    for row in hs_rows():
        if row.level >= 4:
            words.update(w for w in re.findall(r"[a-z]{4,}", row.description.lower()) if w not in _STOPWORDS)
    return tuple(w for w, _ in words.most_common(limit))


def _party_countries(party: str) -> list[str]:
    return sorted(EU_MEMBERS, key=lambda c: -EU_MEMBERS[c]) if party == "EU" else [party]


def _rule_prefix(rule: Mapping[str, Any]) -> str:
    return str(rule.get("hs_subheading") or rule.get("hs_heading") or rule["hs_chapter"])


def _product(
    rng: random.Random, rule: Mapping[str, Any], codes: Sequence[str], subheadings: Sequence[str]
) -> dict[str, Any]:
    """One assessable product for ``rule`` (``codes``: its subheadings): route, BOM, prices, processes."""
    parties = list(rule["jurisdictions"])
    rng.shuffle(parties)
    origin = rng.choice(_party_countries(parties[0])[:6])
    dest = rng.choice(_party_countries(parties[1])[:6])
    bom: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        foreign = rng.random() < 0.5
        bom.append(
            {
                "hs_code": rng.choice(subheadings),
                "value": round(rng.uniform(5, 400), 2),
                "origin_country": rng.choice(_THIRD_COUNTRIES) if foreign else origin,
            }
        )
    total = sum(b["value"] for b in bom)
    criteria = rule["payload"]["criteria"]
    required = list(criteria.get("process", {}).get("required", []))
    body: dict[str, Any] = {
        "hs_code": rng.choice(codes),
        "bill_of_materials": bom,
        "agreement_code": rule["agreement_code"],
        "origin_country": origin,
        "destination_country": dest,
        "assessment_date": ASSESSMENT_DATE,
        "ex_works_price": round(total * rng.uniform(1.3, 2.6), 2),
    }
    if criteria.get("rvc", {}).get("method") in ("transaction_value", "net_cost"):
        body["transaction_value"] = round(body["ex_works_price"] * 1.05, 2)
        body["net_cost"] = round(total * rng.uniform(1.1, 1.8), 2)
    if required or rng.random() < 0.3:
        body["processes"] = required if rng.random() < 0.7 else []
    return body


class Workload:
    """Skewed request generator over the seeded data (tenants, HS codes, rules, products, routes).

    ``pause`` (for example ``lambda: gevent.sleep(0)``) is called every few products while the
    pool is built, so an event loop sharing the thread keeps serving its heartbeats. ``admin_token``
    is the server's operator token, sent on the cross-tenant kinds.
    """

    def __init__(
        self,
        tenants: int = 200,
        seed: int = 42,
        products: int = 400,
        weights: Mapping[str, int] | None = None,
        pause: Callable[[], object] | None = None,
        admin_token: str | None = None,
    ) -> None:
        if isinstance(tenants, bool) or not isinstance(tenants, int) or tenants < 1:
            raise ParameterError("tenants", tenants, "a whole number >= 1 (the dataset's tenant count)")
        if isinstance(products, bool) or not isinstance(products, int) or products < 1:
            raise ParameterError("products", products, "a whole number >= 1")
        self.weights = dict(weights if weights is not None else KIND_WEIGHTS)
        for kind, w in self.weights.items():
            if kind not in ENDPOINT_NAMES or kind == "job_status":
                raise ParameterError("weights", kind, "request kinds among " + ", ".join(KIND_WEIGHTS))
            if isinstance(w, bool) or not isinstance(w, int) or w < 0:
                raise ParameterError(f"weights[{kind}]", w, "a whole number >= 0")
        if not any(self.weights.values()):
            raise ParameterError("weights", self.weights, "at least one kind with a weight > 0")
        self._operator = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        rng = random.Random(seed)
        self.tenant_ids = tenant_ids(tenants)
        self.tenants = ZipfPicker(self.tenant_ids, 1.1)
        subheadings = [r.code for r in hs_rows() if r.level == 6]
        headings = [r.code for r in hs_rows() if r.level == 4]
        lookup = subheadings + headings
        rng.shuffle(lookup)
        self.hs_codes = ZipfPicker(lookup, 1.0)
        words = list(search_words())
        rng.shuffle(words)
        self.search_words = ZipfPicker(words, 1.0)
        self.rules = list(rules())
        self.rule_ids = ZipfPicker([r["rule_id"] for r in self.rules], 0.8)
        combos = sorted({(r["agreement_code"], r["hs_chapter"]) for r in self.rules})
        self.rule_lists = ZipfPicker(combos + [(a, None) for a in sorted({c[0] for c in combos})], 0.8)
        self.products = ZipfPicker(self._product_pool(rng, products, subheadings, pause), 1.0)
        routes = Counter((p["origin_country"], p["destination_country"]) for p in self.products.items)
        self.routes = ZipfPicker([r for r, _ in routes.most_common()], 1.0)
        self.kinds = [k for k, w in self.weights.items() if w > 0]
        self._kind_cum = list(itertools.accumulate(self.weights[k] for k in self.kinds))
        self._hashes: dict[tuple[str, int], str] = {}

    def _product_pool(
        self, rng: random.Random, n: int, subheadings: Sequence[str], pause: Callable[[], object] | None
    ) -> list[dict[str, Any]]:
        from psra_bench.psra.assessment import assess, default_rules

        active = [r for r in self.rules if r["effective_to"] is None]
        compiled = default_rules()
        probe = self.tenant_ids[0]
        codes = {_rule_prefix(r): [c for c in subheadings if c.startswith(_rule_prefix(r))] for r in active}
        pool: list[dict[str, Any]] = []
        for attempt in range(n * 20):
            if len(pool) >= n:
                break
            if pause is not None and attempt % 8 == 0:
                pause()
            rule = rng.choice(active)
            body = _product(rng, rule, codes[_rule_prefix(rule)], subheadings)
            try:
                assess({**body, "tenant_id": probe}, compiled)
            except InputError:
                continue
            pool.append(body)
        if not pool:  # pragma: no cover - the vendored rules always admit products
            raise ParameterError("products", n, "a pool the assessment engine accepts (none was valid)")
        return pool

    # ------------------------------------------------------------------ draws

    def tenant(self, rng: random.Random) -> str:
        """A tenant id, busy tenants more often."""
        return str(self.tenants.pick(rng))

    def kind(self, rng: random.Random) -> str:
        """A request kind drawn by the mix's weights."""
        return self.kinds[bisect.bisect_left(self._kind_cum, rng.random() * self._kind_cum[-1])]

    def assessment_body(self, rng: random.Random, tenant: str) -> dict[str, Any]:
        """A pooled product assessed for ``tenant`` (popular products repeat: the same input hash)."""
        return {**self.products.pick(rng), "tenant_id": tenant}

    def input_hash(self, tenant: str, body: Mapping[str, Any]) -> str:
        """The input hash the server stores for ``body`` (what duplicate detection looks up)."""
        from psra_bench.psra.assessment import input_hash, parse_request

        key = (tenant, id(body))
        cached = self._hashes.get(key)
        if cached is None:
            req = parse_request({**body, "tenant_id": tenant})
            cached = self._hashes[key] = input_hash(req, req.agreement_code)
        return cached

    def request(self, kind: str, rng: random.Random, tenant: str | None = None) -> RequestSpec:
        """The request of ``kind`` (for ``tenant``, or a drawn one) — every kind except job_status."""
        t = tenant or self.tenant(rng)
        hdr = {"X-Tenant-ID": t}
        name = ENDPOINT_NAMES.get(kind)
        if name is None or kind == "job_status":
            raise ParameterError("kind", kind, "one of " + ", ".join(KIND_WEIGHTS))
        if kind == "hs_lookup":
            return RequestSpec(kind, "GET", f"/api/hs/{self.hs_codes.pick(rng)}", name)
        if kind == "hs_search":
            return RequestSpec(kind, "GET", f"/api/hs/search?q={self.search_words.pick(rng)}&limit=20", name)
        if kind == "rules_list":
            agreement, chapter = self.rule_lists.pick(rng)
            query = f"agreement={agreement}" + (f"&chapter={chapter}" if chapter else "")
            return RequestSpec(kind, "GET", f"/api/rules?{query}", name)
        if kind == "rule_by_id":
            return RequestSpec(kind, "GET", f"/api/rules/{self.rule_ids.pick(rng)}", name)
        if kind in ("assessment", "job_submit"):
            path = "/api/assessments" if kind == "assessment" else "/api/jobs/assessment/submit"
            return RequestSpec(kind, "POST", path, name, hdr, self.assessment_body(rng, t))
        if kind == "tenant_history":
            return RequestSpec(kind, "GET", f"/api/tenants/{t}/verdicts?limit=100", name, hdr)
        if kind == "recent_verdicts":
            return RequestSpec(kind, "GET", "/api/verdicts/recent?limit=100", name, dict(self._operator))
        if kind == "dashboard":
            days = rng.choice((7, 30, 30, 30, 90))
            until = DEFAULT_END.strftime("%Y-%m-%dT%H:%M:%SZ")
            return RequestSpec(kind, "GET", f"/api/tenants/{t}/dashboard?days={days}&until={until}", name, hdr)
        if kind == "trade_route_report":
            date_to = DEFAULT_END.date() - dt.timedelta(days=rng.randint(0, 60))
            date_from = date_to - dt.timedelta(days=rng.choice((30, 90, 90, 180)))
            path = f"/api/tenants/{t}/trade-route-report?date_from={date_from}&date_to={date_to}&limit=50"
            return RequestSpec(kind, "GET", path, name, hdr)
        if kind == "trade_route":
            exp, imp = self.routes.pick(rng)
            return RequestSpec(kind, "GET", f"/api/trade-routes/{exp}/{imp}", name, dict(self._operator))
        # duplicate_check: the hash of a popular product for this tenant (found once it was assessed)
        body = self.products.pick(rng)
        return RequestSpec(kind, "GET", f"/api/tenants/{t}/duplicates/{self.input_hash(t, body)}", name, hdr)

    def draw(self, rng: random.Random, tenant: str | None = None) -> RequestSpec:
        """A request drawn from the whole mix."""
        return self.request(self.kind(rng), rng, tenant)

    @staticmethod
    def job_status(job_id: str, tenant: str | None = None) -> RequestSpec:
        """The poll of one submitted job (a tenant's job needs that tenant's header)."""
        headers = {"X-Tenant-ID": tenant} if tenant else {}
        return RequestSpec("job_status", "GET", f"/api/jobs/{job_id}/status", ENDPOINT_NAMES["job_status"], headers)
