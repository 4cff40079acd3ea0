"""Migration scripts, applied in order by ``service.db.upgrade_database`` (Alembic skips this file)."""
