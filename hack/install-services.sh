#!/usr/bin/env bash
# Installs the PostgreSQL and Redis servers the store and cache tests start on loopback ports,
# and the headless Chromium (with its ChromeDriver) the dashboard's browser test drives
# (Debian/Ubuntu packages). Nothing is started or enabled here: each test owns its servers.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null; }
if have initdb && have postgres && have psql && have redis-server && have chromium \
  && have chromedriver; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends postgresql redis-server chromium \
  chromium-driver >/dev/null
echo "installed: $(ls -d /usr/lib/postgresql/*/bin | tail -n 1), $(command -v redis-server)," \
  "$(command -v chromium), $(command -v chromedriver)"
