# The Airflow image of the Docker Compose stack (docker-compose.yaml): Airflow 3.3 with the Celery
# provider and this package, installed from a wheelhouse built on the host, so no step of this
# build needs the network:
#
#   python include/compose_stack.py wheelhouse           # var/compose/wheelhouse
#   docker compose build                                 # or: docker build -t patient-ml/airflow .
#
# BASE_IMAGE is any image with Python 3.11 on PATH as python3: Airflow's official image (the
# default) or, where no registry is reachable, the local Debian bookworm image of
# include/docker/build_base_image.sh (--build-arg BASE_IMAGE=patient-ml/base:bookworm). On both,
# Airflow and the package go into their own virtualenv, /opt/patient-ml/venv, first on PATH (on
# the official image its own Airflow install is left unused), and the container runs as the
# user `airflow` (uid AIRFLOW_UID, group 0) with AIRFLOW_HOME=/opt/airflow, as Airflow's images do.
# The dependencies are one layer and the project's wheel another: a change of the project
# rebuilds only the second.
ARG BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${BASE_IMAGE}
ARG AIRFLOW_UID=50000
USER root
COPY var/compose/wheelhouse/deps/ /tmp/wheelhouse/
# uv (a wheel of the wheelhouse, unpacked with the standard library: Debian's python3 has no
# ensurepip) makes the virtualenv and installs every pinned wheel without an index.
RUN set -eu; \
    id -u airflow >/dev/null 2>&1 \
      || useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow --create-home airflow; \
    python3 -m zipfile -e /tmp/wheelhouse/uv-*.whl /tmp/uv; \
    mkdir -p /opt/patient-ml/bin; \
    install -m 0755 /tmp/uv/uv-*.data/scripts/uv /opt/patient-ml/bin/uv; \
    uv=/opt/patient-ml/bin/uv; \
    "$uv" venv --quiet --python "$(command -v python3)" /opt/patient-ml/venv; \
    "$uv" pip install --quiet --no-cache --python /opt/patient-ml/venv/bin/python --no-index \
      --find-links /tmp/wheelhouse -r /tmp/wheelhouse/requirements.txt; \
    "$uv" pip install --quiet --no-cache --python /opt/patient-ml/venv/bin/python --no-index \
      --no-deps /tmp/wheelhouse/nodeps/*.whl; \
    mkdir -p /opt/airflow/dags /opt/airflow/include /opt/airflow/shared /opt/airflow/scratch; \
    chown -R "${AIRFLOW_UID}:0" /opt/airflow; chmod -R g+rwX /opt/airflow; \
    rm -rf /tmp/wheelhouse /tmp/uv
COPY var/compose/wheelhouse/project/ /tmp/project/
RUN /opt/patient-ml/bin/uv pip install --quiet --no-cache --no-deps \
      --python /opt/patient-ml/venv/bin/python /tmp/project/*.whl \
    && rm -rf /tmp/project \
    && /opt/patient-ml/venv/bin/python -c "import patient_ml.plugin, airflow.providers.celery"
ENV PATH=/opt/patient-ml/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/airflow
WORKDIR /opt/airflow
USER ${AIRFLOW_UID}
