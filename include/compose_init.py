"""The init service of docker-compose.yaml (`python3 -m include.compose_init`), run once before
the other Airflow services start:

1. creates Airflow's metadata database and the product's database when missing (the product's
   is a second database of the same PostgreSQL server);
2. migrates both (`airflow db migrate`, `patient-ml db upgrade`; safe to repeat);
3. creates the users, one per Patient ML role (include/demo_users.py, docs/roles.md): Airflow's
   simple auth manager reads their passwords from
   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE; the admin's is _AIRFLOW_WWW_USER_PASSWORD
   (default `admin`), the other users' are generated once; how to sign in as each is printed;
4. builds the reference trainer images (`include/trainers/*` → `patient-ml/<name>-trainer:0.1.0`)
   on the host engine when they are missing, from PATIENT_ML_TRAINER_BASE_IMAGE.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from include.demo_users import DEMO_USERS, sign_in_lines

TRAINERS = Path(__file__).resolve().parent / "trainers"
URL = "http://localhost:8080"
TRAINER_VERSION = "0.1.0"


def say(message: str) -> None:
    print(f"compose-init: {message}", flush=True)


def ensure_database(url: str) -> None:
    """CREATE DATABASE for a PostgreSQL URL whose database does not exist yet."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        return
    driver = "postgresql+psycopg"
    admin = create_engine(
        parsed.set(drivername=driver, database="postgres"), isolation_level="AUTOCOMMIT"
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with admin.connect() as conn:
                    exists = conn.execute(
                        text("SELECT 1 FROM pg_database WHERE datname = :name"),
                        {"name": parsed.database},
                    ).scalar()
                    if not exists:
                        quoted = parsed.database.replace('"', '""')
                        conn.execute(text(f'CREATE DATABASE "{quoted}"'))
                        say(f"created database {parsed.database}")
                    return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                say(f"PostgreSQL not ready ({type(exc).__name__}); retrying")
                time.sleep(2)
    finally:
        admin.dispose()


def write_passwords() -> None:
    path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    users = [
        item.split(":")[0]
        for item in os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "").split(",")
        if item
    ]
    known = json.loads(path.read_text()) if path.exists() else {}
    passwords = {user: known.get(user) or secrets.token_urlsafe(12) for user in users}
    passwords["admin"] = os.environ.get("_AIRFLOW_WWW_USER_PASSWORD") or "admin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(passwords))
    path.chmod(0o600)
    # never a password in the logs: the init container's output is kept by the engine
    say("Airflow user admin: password from _AIRFLOW_WWW_USER_PASSWORD (default admin)")
    read_with = f"docker-compose exec airflow-apiserver cat {path}"
    base = os.environ.get("AIRFLOW__API__BASE_URL") or URL
    for line in sign_in_lines(base, path, read_with=read_with):
        say(line)
    unknown = sorted(set(users) - {u.name for u in DEMO_USERS})
    for user in unknown:
        say(f"Airflow user {user}: password generated (`{read_with}`)")


def build_trainer_images() -> None:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:
        say(f"no Docker engine answers ({type(exc).__name__}): trainer images not built")
        return
    base = os.environ.get("PATIENT_ML_TRAINER_BASE_IMAGE", "python:3.11-slim")
    for folder in sorted(TRAINERS.iterdir()):
        if not (folder / "Dockerfile").exists():
            continue
        tag = f"patient-ml/{folder.name.replace('_', '-')}-trainer:{TRAINER_VERSION}"
        try:
            client.images.get(tag)
            say(f"{tag} is there")
            continue
        except docker.errors.ImageNotFound:
            pass
        started = time.monotonic()
        # include/trainers is the context: the images share its common/ folder
        client.images.build(
            path=str(TRAINERS), dockerfile=f"{folder.name}/Dockerfile", tag=tag,
            buildargs={"BASE_IMAGE": base}, rm=True,
        )  # fmt: skip
        say(f"built {tag} from {base} in {time.monotonic() - started:.0f} s")


def main() -> None:
    for variable in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "PATIENT_ML_DATABASE_URL"):
        url = os.environ.get(variable)
        if url:
            ensure_database(url)
    for folder in (os.environ.get("PATIENT_ML_HOME"), os.environ.get("TMPDIR")):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
    say("airflow db migrate")
    subprocess.run(["airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    say("patient-ml db upgrade")
    subprocess.run(["patient-ml", "db", "upgrade"], check=True)
    write_passwords()
    build_trainer_images()
    say("done")


if __name__ == "__main__":
    sys.exit(main())
