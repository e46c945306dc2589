# The ML runtime: MLflow tracking server, the parameter servers, Spark in local mode, the
# flywheel CLI, and the one-shot stack-init (Kafka topics, HDFS folders). Build from the
# repository root:
#   docker build -f docker/ml.Dockerfile -t flywheel/ml:0.1.0 .
# Layout mirrors a checkout (/opt/flywheel with .venv/ml inside), so flywheel.paths holds.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the pinned environment (requirements.txt) and the editable flywheel package ------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ cmake libcuckoo-dev libkrb5-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/flywheel
COPY requirements.txt ./
RUN uv venv --python /usr/local/bin/python3.11 .venv/ml \
 && uv pip sync --python .venv/ml/bin/python requirements.txt
COPY pyproject.toml CMakeLists.txt ./
COPY flywheel/ flywheel/
COPY datasets/ datasets/
COPY models/ models/
COPY streaming/ streaming/
COPY pipelines/ pipelines/
COPY paramserver/ paramserver/
COPY serving/ serving/
COPY dags/ dags/
COPY config/ config/
COPY docker/entrypoint.py docker/healthcheck.py docker/
# builds the native embedding table (paramserver._cuckoo) with scikit-build-core
RUN uv pip install --python .venv/ml/bin/python --no-deps -e . && rm -rf ./*.egg-info

# --- runtime-base: Python 3.11 + OpenJDK 17 (Debian), non-root user, state dirs -------------
# Identical in every Flywheel image, so hosts store this layer once. Slim images drop
# /usr/share/man, which the JDK's postinst expects.
FROM ${PYTHON_IMAGE} AS runtime-base
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless procps krb5-user \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 flywheel \
 && useradd --system --uid 10001 --gid flywheel --create-home --home-dir /home/flywheel \
      --shell /usr/sbin/nologin flywheel \
 && install -d -o flywheel -g flywheel /var/lib/flywheel \
      /var/lib/flywheel/logs /var/lib/flywheel/kafka /var/lib/flywheel/hdfs \
      /var/lib/flywheel/flink /var/lib/flywheel/mlflow /var/lib/flywheel/airflow \
      /var/lib/flywheel/kerberos /var/lib/flywheel/kerberos/keytabs \
 && install -d -m 0700 -o flywheel -g flywheel /var/lib/flywheel/kerberos/db \
      /var/lib/flywheel/kerberos/keytabs/hdfs /var/lib/flywheel/kerberos/keytabs/flywheel \
      /var/lib/flywheel/hdfs/tls /var/lib/flywheel/hdfs/tls/ca /var/lib/flywheel/hdfs/tls/server \
      /var/lib/flywheel/hdfs/tls/public /var/lib/flywheel/flink/tls
ENV PYTHONUNBUFFERED=1 FLYWHEEL_CONFIG=config/docker.yaml

# --- runtime ---------------------------------------------------------------------------------
FROM runtime-base AS ml
COPY --from=build /opt/flywheel /opt/flywheel
ENV PATH=/opt/flywheel/.venv/ml/bin:${PATH}
USER flywheel
WORKDIR /opt/flywheel
EXPOSE 5000 7100 7200
ENTRYPOINT ["/opt/flywheel/.venv/ml/bin/python", "/opt/flywheel/docker/entrypoint.py"]
CMD ["mlflow"]
