"""Triggers (run in the Airflow triggerer, so waits hold no worker slot)."""
