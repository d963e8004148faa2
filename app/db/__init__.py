"""The database layer: the fair pool and its deadlines (`pool`), Tortoise and asyncpg wired per
worker (`wiring`), migrations (`migrate`), the start-up capacity check (`capacity`), and the
embedded PostgreSQL of development and tests (`embedded`).

Imports nothing of the app but `app.settings` (the import contract in pyproject.toml).
"""
