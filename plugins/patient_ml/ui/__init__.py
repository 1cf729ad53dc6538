"""The web UI: the Patient ML pages inside Airflow's UI (see `app`)."""
