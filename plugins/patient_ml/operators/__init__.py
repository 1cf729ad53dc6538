"""Airflow operators: the policy of each pipeline stage (hooks do the I/O)."""
