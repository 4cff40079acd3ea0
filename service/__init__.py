"""The front and the state both processes share.

- ``service.cli``: the ``adacs`` command (heavy libraries imported inside commands);
- ``service.core``: settings (``ADACS_*`` environment variables) and API-key hashing;
- ``service.db``: SQLAlchemy models, engines (SQLite WAL or PostgreSQL) and Alembic migrations;
- ``service.storage``: the content-addressed artifact store;
- ``service.registry``: model versions and their stages (the displacement estimator only).

The FastAPI app comes next. Nothing here imports torch at module level: the API process must stay
free of it (``tests/test_boundaries.py``).
"""
