"""Start a real Airflow 3 (API server, scheduler, DAG processor, triggerer) as separate processes
on this machine, pointed at the repository's `dags/` folder, and talk to its REST API.

Used by the main-job command (`make demo`) and the end-to-end tests. Each component runs in its
own process group and logs to `<home>/logs/<component>.log`; `stop()` ends them all.

    stack = AirflowStack(Path("var/demo/airflow"), env={"PATIENT_ML_HOME": ...})
    stack.migrate(); stack.start(); stack.wait_ready()
    api = stack.client("admin")          # a JWT from POST /auth/token
    api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from include.demo_users import DEMO_USERS, FAB_ROLES, simple_auth_manager_users

ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = ROOT / "dags"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# one user per Patient ML role (include/demo_users.py, docs/roles.md); name -> simple auth role
USERS = {user.name: user.role for user in DEMO_USERS}


def openlineage_file_transport(root: Path, env: dict[str, str], namespace: str) -> Path | None:
    """With the OpenLineage provider installed (the `lineage` extra), every task's events go to
    one JSON-lines file under `root` (the client's file transport, appending); None without it.
    `env` is the Airflow processes' environment, changed in place."""
    import importlib.util

    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        return None
    events = root / "openlineage" / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(transport)
    env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = namespace
    return events


class AirflowStackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowStack:
    """One Airflow deployment in `home` (AIRFLOW_HOME).

    :param home: AIRFLOW_HOME (config, logs, the SQLite metadata DB by default).
    :param metadata_db: SQLAlchemy URL of the metadata DB; default SQLite in `home`.
    :param env: extra environment of every component (PATIENT_ML_* settings).
    :param port: API server port (default: a free one).
    :param parse_interval: seconds between two parses of the DAG file (new models appear then).
    :param auth_manager: "simple" (Airflow's default; the demo users of
        include/demo_users.py with generated passwords) or "fab" (the FAB auth manager of
        `apache-airflow-providers-fab`: `migrate()` creates the same users with FAB's built-in
        roles through `airflow users create`, passwords in the same `passwords.json`).
    """

    def __init__(
        self,
        home: Path,
        *,
        metadata_db: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        parse_interval: int = 5,
        auth_manager: str = "simple",
    ) -> None:
        if auth_manager not in ("simple", "fab"):
            raise ValueError(f"auth_manager must be 'simple' or 'fab', not {auth_manager!r}")
        self.auth_manager = auth_manager
        self.home = home.resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metadata_db = metadata_db or f"sqlite:///{self.home / 'airflow.db'}"
        self.passwords_file = self.home / "passwords.json"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        secret_file = self.home / ".jwt_secret"
        self.home.mkdir(parents=True, exist_ok=True)
        if not secret_file.exists() or len(secret_file.read_bytes().strip()) < JWT_SECRET_BYTES:
            # Airflow signs its JWTs with HS512: PyJWT warns (InsecureKeyLengthWarning) in the
            # API server's log for a key shorter than the hash's 64 bytes.
            secret_file.write_text(secrets.token_urlsafe(JWT_SECRET_BYTES))
            secret_file.chmod(0o600)
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": simple_auth_manager_users(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_db,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text().strip(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(parse_interval),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(parse_interval),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # free ports, not 8793/8794: two deployments on one machine (the demo beside the
            # e2e tests) must not fight over the log servers of the workers and the triggerer
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **(env or {}),
        }
        if auth_manager == "fab":
            self.env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB_AUTH_MANAGER

    # ------------------------------------------------------------------ processes
    def airflow(self, *args: str, timeout: float = 600) -> str:
        """Run an `airflow` command against this deployment; its output, or an error with it."""
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AirflowStackError(
                f"airflow {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def migrate(self) -> None:
        self.airflow("db", "migrate")
        if self.auth_manager == "fab":
            self.create_fab_users()

    def create_fab_users(self) -> None:
        """The demo users under FAB, each with FAB's built-in role of its simple auth manager
        role (Viewer, User, Op, Admin) and a generated password kept in `passwords.json` as the
        simple auth manager keeps its own. What `airflow users create --role ...` does for each
        (docs/roles.md), in one process: one `airflow` command takes 5-20 s to start. Users
        that exist already are left as they are."""
        passwords: dict[str, str] = {}
        if self.passwords_file.exists():
            passwords = json.loads(self.passwords_file.read_text())
        users = [
            {"name": u.name, "role": FAB_ROLES[u.role], "password": secrets.token_urlsafe(12)}
            for u in DEMO_USERS
            if u.name not in passwords
        ]
        done = subprocess.run(
            [sys.executable, "-c", _CREATE_FAB_USERS], input=json.dumps(users), env=self.env,
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AirflowStackError(f"creating the FAB users failed:\n{done.stderr[-3000:]}")
        passwords.update({u["name"]: u["password"] for u in users})
        self.passwords_file.write_text(json.dumps(passwords, indent=2))
        self.passwords_file.chmod(0o600)

    def start(self, components: tuple[str, ...] = COMPONENTS) -> None:
        """Start the components (all by default; the UI benchmark needs only the API server)."""
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in components:
            out = (logs / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            out.close()
        (self.home / "pids.json").write_text(
            json.dumps({name: p.pid for name, p in self.processes.items()})
        )

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AirflowStackError(
                    f"airflow {name} exited with {proc.returncode}; its log:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.home / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the API server answers and the scheduler, DAG processor and triggerer beat."""

        def ready() -> bool:
            try:
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
            except (requests.RequestException, ValueError):
                return False
            states = [
                (health.get(part) or {}).get("status")
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ]
            return all(s == "healthy" for s in states) and self.passwords_file.exists()

        self.wait_for(ready, timeout, "Airflow to become healthy")

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AirflowStackError(
                    f"timed out after {timeout:.0f} s waiting for {what}; scheduler log:\n"
                    f"{self.log_tail('scheduler')}"
                )
            time.sleep(1.0)

    def wait_dag_run(self, api: ApiClient, dag_id: str, dag_run: str, timeout: float = 300) -> str:
        """Until the DAG run ends; its state (success or failed)."""

        def ended() -> str | None:
            state = str(api.dag_run(dag_id, dag_run)["state"])
            return state if state in ("success", "failed") else None

        return str(self.wait_for(ended, timeout, f"DAG run {dag_run} of {dag_id} to end"))

    def stop_component(self, name: str) -> None:
        """Stop one component (e.g. the triggerer, for a fault test); `start((name,))` starts
        it again."""
        proc = self.processes.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        (self.home / "pids.json").unlink(missing_ok=True)

    @staticmethod
    def stop_recorded(home: Path) -> bool:
        """Stop a stack started earlier (by another process) from its pids.json."""
        pids_file = home / "pids.json"
        if not pids_file.exists():
            return False
        for pid in json.loads(pids_file.read_text()).values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGTERM)
        pids_file.unlink()
        return True

    # ------------------------------------------------------------------ REST API
    def password(self, user: str) -> str:
        return str(json.loads(self.passwords_file.read_text())[user])

    def client(self, user: str = "admin") -> ApiClient:
        response = requests.post(
            f"{self.url}/auth/token",
            json={"username": user, "password": self.password(user)},
            timeout=30,
        )
        if response.status_code >= 300:
            raise AirflowStackError(f"POST /auth/token: {response.status_code} {response.text}")
        return ApiClient(self.url, response.json()["access_token"])


class RemoteAirflow(AirflowStack):
    """An Airflow that is already running elsewhere (the Docker Compose stack), with the same
    interface for the demo: its REST API at `url`, the users' passwords in `passwords_file` (the
    simple auth manager's file, on the compose stack's shared volume). Its processes belong to
    whoever started them: `check_alive` and `stop` do nothing."""

    def __init__(self, url: str, env: Mapping[str, str], passwords_file: Path) -> None:
        self.url = url.rstrip("/")
        self.env = dict(env)
        self.passwords_file = passwords_file
        self.processes = {}
        self.home = passwords_file.parent

    def check_alive(self) -> None:
        return None

    def log_tail(self, name: str, lines: int = 40) -> str:
        return f"(see the logs of the {name} service: docker compose logs airflow-{name})"

    def stop(self) -> None:
        return None


JWT_SECRET_BYTES = 64

# The FAB role that lets a user open the Patient ML pages in Airflow's UI (docs/roles.md).
FAB_PAGES_ROLE = "Patient ML pages"

# `airflow users create` (apache-airflow-providers-fab's user_command.users_create) for every
# user of the JSON list on stdin, in one process, each with its built-in role and FAB_PAGES_ROLE.
_CREATE_FAB_USERS = """
import json, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from airflow.providers.fab.www.security import permissions

PAGES_ROLE = "@PAGES_ROLE@"

with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    # FAB's Viewer and User lack read and menu access on Plugins, without which Airflow's UI
    # shows none of the plugin's pages (a 404; docs/roles.md): a role of its own grants them.
    pages = sm.find_role(PAGES_ROLE) or sm.add_role(PAGES_ROLE)
    for action in (permissions.ACTION_CAN_READ, permissions.ACTION_CAN_ACCESS_MENU):
        sm.add_permission_to_role(pages, sm.create_permission(action, permissions.RESOURCE_PLUGIN))
    for user in json.load(sys.stdin):
        if sm.find_user(user["name"]):
            continue
        role = sm.find_role(user["role"])
        if role is None:
            raise SystemExit(f"no FAB role {user['role']!r}")
        name, email = user["name"], f"{user['name']}@example.org"
        if not sm.add_user(name, name, "demo", email, [role, pages], user["password"]):
            raise SystemExit(f"FAB did not create the user {name!r}")
""".replace("@PAGES_ROLE@", FAB_PAGES_ROLE)


class ApiClient:
    """The Airflow REST API with a Bearer JWT."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        # A GET is asked again (twice at most) when the API server did not answer in time: on a
        # loaded machine it can stall for a minute (seen in CI), which is not what a test checks.
        tries = 3 if method == "GET" else 1
        for attempt in range(1, tries + 1):
            try:
                response = self.session.request(method, f"{self.url}{path}", json=body, timeout=60)
                break
            except (requests.Timeout, requests.ConnectionError):
                if attempt == tries:
                    raise
        if response.status_code >= 300 and response.status_code not in ok:
            raise AirflowStackError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def get(self, path: str, ok: tuple[int, ...] = ()) -> Any:
        return self.request("GET", path, ok=ok)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)

    def task_states(self, dag_id: str, dag_run_id: str) -> dict[str, str]:
        found = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances?limit=100")
        states: dict[str, str] = {}
        for ti in found["task_instances"]:
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = ti["state"]
        return states

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, the newest first."""
        found = self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after")
        return list(found["dag_runs"])

    def dag_run(self, dag_id: str, dag_run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}")
