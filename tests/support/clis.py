"""An emulated cluster reached through the real kubectl and helm binaries, as a user reaches one.

Each has private caches (discovery, OpenAPI, helm's repositories and releases), so one test's
server never answers from another's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.kubeapi import KubeAPIServer
from tests.support.tools import tool


class Cluster:
    """An emulator, a kubeconfig, and private caches for kubectl and helm."""

    def __init__(self, server: KubeAPIServer, home: Path) -> None:
        self.server = server
        self.home = home
        self.kubeconfig = server.write_kubeconfig(home / "kubeconfig")
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(home / "kube-cache"),  # discovery & OpenAPI caches: this server's
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
        }

    def run(
        self, binary: str, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [tool(binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{binary} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)
