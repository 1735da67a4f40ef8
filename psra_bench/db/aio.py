"""The asyncio twin of :class:`psra_bench.db.dal.PostgresDAL`: the same queries and input checks, asyncio pool.

Each read first asks a *planner* — a ``PostgresDAL`` whose ``fetch_all`` / ``fetch_one`` return
the query they were asked to run instead of running it — for the query name and parameters, so
the validation (``InputError`` naming the field) and the SQL are the sync DAL's own, never a
copy; then it runs that query on the asyncio pool. Only the reads of the API's async routes (the
ones a cache answers, :mod:`psra_bench.api.psra_routes`) are here; the database-bound reads and
the writes stay on the sync DAL, in threads.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from psra_bench.db.dal import QUERIES, PostgresDAL, jsonable

__all__ = ["AsyncPostgresDAL"]


@dataclass(frozen=True)
class _Query:
    name: str
    params: Mapping[str, Any]
    one: bool


class _Planner(PostgresDAL):
    """A PostgresDAL that checks its inputs and returns the query it would run (it has no pool)."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None))

    def fetch_all(self, name: str, params: Mapping[str, Any]) -> Any:
        return _Query(name, params, one=False)

    def fetch_one(self, name: str, params: Mapping[str, Any]) -> Any:
        return _Query(name, params, one=True)


class AsyncPostgresDAL:
    """PostgresDAL's reads, awaited on an asyncio pool of autocommit connections."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._plan = _Planner()

    async def _run(self, planned: object) -> Any:
        """Run what the planner returned (typed as the sync DAL's result, it is a _Query)."""
        query = planned if isinstance(planned, _Query) else None
        if query is None:  # a planner method that ran SQL itself: never for the reads listed here
            raise TypeError(f"the planner returned {type(planned).__name__}, not a query")
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(QUERIES[query.name], query.params)
            rows = [jsonable(row) for row in await cur.fetchall()]
        if query.one:
            return rows[0] if rows else None
        return rows

    async def hs_code_by_code(self, code: str) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, await self._run(self._plan.hs_code_by_code(code)))

    async def hs_search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self._run(self._plan.hs_search(query, limit)))

    async def rules_by_agreement(self, agreement_code: str) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self._run(self._plan.rules_by_agreement(agreement_code)))

    async def rule_by_id(self, rule_id: str) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, await self._run(self._plan.rule_by_id(rule_id)))

    async def agreements(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self._run(self._plan.agreements()))

    async def verdict_by_evaluation_id(self, evaluation_id: str | uuid.UUID) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, await self._run(self._plan.verdict_by_evaluation_id(evaluation_id)))
