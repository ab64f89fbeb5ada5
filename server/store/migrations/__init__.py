"""Alembic migrations of the store's schema (``server/store/schema.py``).

Run by the store on open (``server.store.migrate.upgrade``) and by ``beamsteer db``. To add a
revision after changing ``schema.py``::

    python -m server.store.migrate revision -m "what changed" --url sqlite:///scratch.db

then review the generated file: autogenerate misses renames and data moves.
"""
