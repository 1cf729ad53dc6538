"""Product database: ORM models, engines/sessions and Alembic migrations."""
