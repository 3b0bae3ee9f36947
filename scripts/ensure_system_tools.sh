#!/usr/bin/env bash
# Check the system tools the local stack and the tests use; install the small ones that a
# Debian machine can get from its package registry (sshpass, the OpenSSH client) when missing.
set -euo pipefail
missing=()
for tool in java mvn go curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: missing ${missing[*]} (needs Java 17+, Maven, Go 1.22+, curl; or set TMSP_KAFKA_BOOTSTRAP and TMSP_MONGO_URL to external servers)" >&2
  [ -n "${TMSP_KAFKA_BOOTSTRAP:-}" ] && [ -n "${TMSP_MONGO_URL:-}" ] || exit 1
fi
apt_pkgs=()
command -v sshpass >/dev/null 2>&1 || apt_pkgs+=(sshpass)
command -v sftp >/dev/null 2>&1 || apt_pkgs+=(openssh-client)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${apt_pkgs[*]} from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}" >/dev/null; }
  else
    echo "setup: please install ${apt_pkgs[*]} (used by the SFTP integration tests)" >&2
    exit 1
  fi
fi
