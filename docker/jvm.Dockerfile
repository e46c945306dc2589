# The JVM runtime: Kafka broker+controller (KRaft) and HDFS NameNode/DataNode, run with the same
# main classes and rendered files as the local stack (flywheel.stack.kafka / .hdfs). A small
# Python env (pydantic, pyyaml, requests) lets docker/entrypoint.py run that rendering code.
# Build from the repository root:
#   docker build -f docker/jvm.Dockerfile -t flywheel/jvm:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG MAVEN_IMAGE=maven:3.9.11-eclipse-temurin-17

# --- jars: the repository's pom fetches the JVM pieces from Maven Central --------------------
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /src
COPY jvm/ jvm/
RUN mvn -q -B -f jvm/pom.xml package -Dflywheel.out=/out/jvm

# --- build: the entrypoint's few Python packages, at requirements.txt's pins -----------------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /opt/flywheel
COPY requirements.txt ./
RUN uv venv --python /usr/local/bin/python3.11 .venv/jvm \
 && uv pip install --python .venv/jvm/bin/python -c requirements.txt pydantic pyyaml requests

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
FROM runtime-base AS jvm
# the kdc service: MIT's KDC and kadmin.local (the realm of HDFS)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends krb5-kdc krb5-admin-server \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/flywheel/.venv/jvm /opt/flywheel/.venv/jvm
COPY --from=jars /out/jvm/kafka /opt/flywheel/build/jvm/kafka
COPY --from=jars /out/jvm/hdfs /opt/flywheel/build/jvm/hdfs
COPY --from=jars /out/jvm/hdfs-webapps /opt/flywheel/build/jvm/hdfs-webapps
COPY flywheel/ /opt/flywheel/flywheel/
COPY config/ /opt/flywheel/config/
COPY docker/entrypoint.py docker/healthcheck.py /opt/flywheel/docker/
USER flywheel
WORKDIR /opt/flywheel
EXPOSE 7088 9092 9093 8020 9870 9864 9866 9867
ENTRYPOINT ["/opt/flywheel/.venv/jvm/bin/python", "/opt/flywheel/docker/entrypoint.py"]
CMD ["kafka"]
