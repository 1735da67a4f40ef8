"""psra-bench: measure the PSRA backend's cache, index migration and job queue for real.

Importing the package does no work: no connections, no servers. Start with
:meth:`psra_bench.settings.Settings.from_env` and :func:`psra_bench.infra.embedded.ensure_services`.
"""

from __future__ import annotations

from psra_bench.exceptions import PsraBenchError
from psra_bench.settings import RedisSettings, Settings, TTLSettings

__version__ = "0.1.0"

__all__ = ["__version__", "PsraBenchError", "Settings", "RedisSettings", "TTLSettings"]
