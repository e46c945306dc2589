# The Flink runtime: a JobManager or TaskManager in the foreground from PyFlink's bin/, with
# PyFlink jobs in thread execution mode. Build from the repository root:
#   docker build -f docker/flink.Dockerfile -t flywheel/flink:0.1.0 .
# Layout mirrors a checkout (/opt/flywheel with .venv/flink and build/jvm inside), so the local
# stack's code (flywheel.stack.flink) renders the cluster's conf and lib dir unchanged.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG MAVEN_IMAGE=maven:3.9.11-eclipse-temurin-17

# --- jars: the repository's pom fetches the JVM pieces from Maven Central --------------------
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /src
COPY jvm/ jvm/
RUN mvn -q -B -f jvm/pom.xml package -Dflywheel.out=/out/jvm

# --- build: the pinned PyFlink environment (requirements/flink.txt) --------------------------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /opt/flywheel
COPY requirements/flink.txt requirements/
RUN uv venv --python /usr/local/bin/python3.11 .venv/flink \
 && uv pip sync --python .venv/flink/bin/python requirements/flink.txt

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
FROM runtime-base AS flink
# caddy (Debian's): the flink-door service, basic auth in front of the JobManager's REST API
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends caddy \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/flywheel/.venv/flink /opt/flywheel/.venv/flink
# Kafka connector + Parquet format (cluster lib dir) and the shaded Hadoop client (hdfs://).
COPY --from=jars /out/jvm/flink-lib /opt/flywheel/build/jvm/flink-lib
COPY --from=jars /out/jvm/hadoop-client /opt/flywheel/build/jvm/hadoop-client
COPY flywheel/ /opt/flywheel/flywheel/
COPY models/ /opt/flywheel/models/
COPY streaming/ /opt/flywheel/streaming/
COPY pipelines/ /opt/flywheel/pipelines/
COPY paramserver/ /opt/flywheel/paramserver/
COPY serving/ /opt/flywheel/serving/
COPY config/ /opt/flywheel/config/
COPY docker/entrypoint.py docker/healthcheck.py /opt/flywheel/docker/
# `flink run` from `docker compose exec`: the same conf/lib dirs the daemons use.
ENV PATH=/opt/flywheel/.venv/flink/lib/python3.11/site-packages/pyflink/bin:/opt/flywheel/.venv/flink/bin:${PATH} \
    FLINK_CONF_DIR=/var/lib/flywheel/flink/conf FLINK_LIB_DIR=/var/lib/flywheel/flink/lib \
    FLINK_LOG_DIR=/var/lib/flywheel/logs/flink HADOOP_CONF_DIR=/var/lib/flywheel/hdfs/conf \
    HADOOP_CLASSPATH=/opt/flywheel/build/jvm/hadoop-client/*
USER flywheel
WORKDIR /opt/flywheel
EXPOSE 8081 6123 6124 6121 6122 6125
ENTRYPOINT ["/opt/flywheel/.venv/flink/bin/python", "/opt/flywheel/docker/entrypoint.py"]
CMD ["flink-jobmanager"]
