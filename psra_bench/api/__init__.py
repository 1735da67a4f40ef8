"""The FastAPI service: the spec's job API plus the PSRA read API."""

from __future__ import annotations

from psra_bench.api.app import AppState, app_from_env, create_app

__all__ = ["create_app", "AppState", "app_from_env"]
