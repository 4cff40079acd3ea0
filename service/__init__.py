"""The front and the state both processes share.

- ``service.cli``: the ``adacs`` command (heavy libraries imported inside commands);
- ``service.core``: settings (``ADACS_*`` environment variables) and API-key hashing;
- ``service.db``: SQLAlchemy models, engines (SQLite WAL or PostgreSQL) and Alembic migrations;
- ``service.storage``: the content-addressed artifact store;
- ``service.registry``: model versions and their stages (the displacement estimator only).

- ``service.main`` / ``service.api``: the FastAPI app (``/healthz``, ``/readyz``, ``/metrics``, the
  model registry under ``/v1/models``), API keys with scopes (``service.cli_keys`` manages them).

Nothing here imports torch at module level: the API process must stay free of it
(``tests/test_boundaries.py``, ``tests/api/test_app.py``).
"""
