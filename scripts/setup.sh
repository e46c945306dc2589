#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: system packages, three pinned Python
# environments, JVM artifacts from Maven Central. Each step is skipped when its inputs
# (lock file, pom) have not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
UV_VERSION=0.13.8

say()  { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die()  { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
digest() { cat "$@" | sha256sum | cut -c1-16; }

# --- prerequisites -------------------------------------------------------------------------
command -v python3.11 >/dev/null || die "python3.11 not found. Install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv) and re-run 'make setup'."
command -v java >/dev/null || die "java not found. Install OpenJDK 17 (apt-get install openjdk-17-jdk-headless) and re-run 'make setup'."
jv=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/{print $2}')
[ "${jv%%.*}" -ge 17 ] 2>/dev/null || die "Java $jv found; Kafka 4, Flink 2.2 and Spark 4 need Java 17+. Install openjdk-17-jdk-headless and put it first on PATH."
command -v mvn >/dev/null || die "mvn not found. Install Maven (apt-get install maven) and re-run 'make setup'."

# --- Debian packages -----------------------------------------------------------------------
APT_PKGS=(libcuckoo-dev docker-compose chromium caddy krb5-kdc krb5-admin-server krb5-user libkrb5-dev)
# chromium: the demo page browser test; caddy: the Flink REST door; krb5-*: the KDC guarding HDFS, kinit;
# libkrb5-dev: builds python-gssapi (no Linux wheels), the SPNEGO login of WebHDFS
missing=()
for p in "${APT_PKGS[@]}"; do  # installed, not merely removed with its config files left
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed: check network access to Debian's mirrors."
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed; install them by hand and re-run 'make setup'."
fi

# --- uv ------------------------------------------------------------------------------------
if ! [ -x "$VENV/bootstrap/bin/uv" ] || [ "$("$VENV/bootstrap/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  say "bootstrap uv $UV_VERSION"
  python3.11 -m venv "$VENV/bootstrap"
  "$VENV/bootstrap/bin/pip" install -q "uv==$UV_VERSION" || die "pip could not download uv from PyPI: check network/proxy settings."
fi
UV=$VENV/bootstrap/bin/uv
export UV_LINK_MODE=${UV_LINK_MODE:-hardlink}

# --- Python environments -------------------------------------------------------------------
sync_env() {  # name lockfile [extra stamp inputs...]
  local name=$1 lock=$2; shift 2
  local want; want=$(digest "$lock" "$@")
  stamp_ok "$VENV/$name/.flywheel-stamp" "$want" && return 0
  say "environment $name <- $lock"
  [ -x "$VENV/$name/bin/python" ] || "$UV" venv -q --python python3.11 "$VENV/$name"
  "$UV" pip sync -q --python "$VENV/$name/bin/python" "$lock" \
    || die "installing $lock into .venv/$name failed (see above). A download error means PyPI is unreachable; a resolution error means the lock is stale: run 'make lock'."
  if [ "$name" = ml ]; then
    "$UV" pip install -q --python "$VENV/$name/bin/python" --no-deps -e . || die "installing the flywheel package into .venv/ml failed."
  fi
  echo "$want" > "$VENV/$name/.flywheel-stamp"
}
sync_env ml requirements.txt pyproject.toml CMakeLists.txt paramserver/native/*
sync_env flink requirements/flink.txt
sync_env airflow requirements/airflow.txt

# --- JVM artifacts -------------------------------------------------------------------------
want=$(digest jvm/pom.xml jvm/*/pom.xml)
if ! stamp_ok build/jvm/.flywheel-stamp "$want"; then
  say "JVM artifacts from Maven Central (Kafka broker, Hadoop HDFS, Flink connector and Parquet)"
  rm -rf build/jvm
  mvn -q -B -f jvm/pom.xml package -Dflywheel.out="$ROOT/build/jvm" \
    || die "mvn could not fetch the JVM artifacts (see above). Check access to Maven Central (repo.maven.apache.org) or a mirror in ~/.m2/settings.xml."
  echo "$want" > build/jvm/.flywheel-stamp
fi
say "ready"
