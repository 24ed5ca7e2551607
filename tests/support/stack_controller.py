"""Plays the StatefulSet and Deployment controllers, the kubelet and the cluster DNS for an
EvalSuite's stack, with real PostgreSQL and Redis processes.

For each suite StatefulSet (the managed store) it does what the StatefulSet controller does for
one replica: it creates the pod's PersistentVolumeClaim from the volumeClaimTemplate
(`data-<set>-0`, owned by the set when its retention policy says Delete), and then what the
kubelet and the image's entrypoint do: a real PostgreSQL server whose data directory belongs to
that claim (initdb with the user, password and database the pod's env names, read from the
Secret as the kubelet reads it; the operator's postgresql.conf from its ConfigMap, with only
where it listens changed), listening on the ClusterIP of the Service that selects the pod —
the emulated cluster's Service range is on loopback — so every process reaches it the way pods
reach a Service. A changed pod template is a rollout, as the StatefulSet and Deployment
controllers make it: the server stops and starts again from the current template, ConfigMap and
Secrets (a renewed certificate's new files among them); `rollouts` lists them. A claim that
still exists when a set of the same name comes back brings its data with it; a deleted claim
takes its data along.

For each suite Deployment (the managed cache) it runs a real redis-server from the
Deployment's ConfigMap and Secret volumes on its Service's ClusterIP. For the results
dashboard's Deployment it runs the container's command (`eval-runner dashboard` with its args
and its env, Secrets resolved as the kubelet does, in a mount namespace whose /etc/hosts is the
cluster DNS below) on its Service's ClusterIP at the container port, and reports it ready as
its readinessProbe (/readyz) says. Every other Deployment and StatefulSet is reported rolled
out, as tests/support/workload_controller.py does.

The hosts file it keeps (`<ClusterIP> <service>.<namespace>.svc ...` for every Service) is the
cluster DNS: the stand-in Job controller mounts it as each pod's /etc/hosts.

Tests take the servers away and give them back (`postgres(...).kill()`, `.start()`,
`redis(...).kill()`), as a crashed node or a restarted pod would.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from eval_api.quantity import parse_quantity
from tests.support.kubeapi import KubeAPIServer
from tests.support.kubeapi.errors import APIError
from tests.support.servers import as_postgres_user, postgres_bin
from tests.support.workload_controller import rolled_out

SUITE_LABEL = "evals.io/suite"


class ServerStartFailed(RuntimeError):
    """A server process exited before it listened (its log's tail in the message)."""


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
        return True
    return False


def _wait_listening(host: str, port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartFailed(f"{what} exited with {process.returncode}")
        if _listening(host, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port}")


class StandInPostgres:
    """A real PostgreSQL server for one StatefulSet pod, its data in its claim's directory."""

    def __init__(
        self, data: Path, conf: str, host: str, port: int, hba: Path | None = None
    ) -> None:
        self.data, self.conf_text, self.host, self.port = data, conf, host, port
        # The operator's pg_hba.conf (spec.tls: TLS only from the network), else the image's.
        self.hba = hba or data / "pg_hba.conf"
        self.process: subprocess.Popen | None = None
        # A test's restart and the stand-in kubelet's restart of a dead server never overlap.
        self.lock = threading.RLock()

    @property
    def conf(self) -> Path:
        return self.data.parent / "postgresql.conf"

    def initdb(self, user: str, password: str, dbname: str) -> None:
        """What the image's entrypoint does on an empty volume."""
        pwfile = self.data.parent / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            [
                *as_postgres_user(),
                postgres_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        self.start()
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run(
            [
                postgres_bin("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                "postgres",
                "-q",
                "-c",
                f'CREATE DATABASE "{dbname}"',
            ],
            check=True,
            capture_output=True,
            env=env,
        )

    def start(self) -> None:
        with self.lock:
            self._start()

    def _start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.conf.write_text(self.conf_text)
        if os.geteuid() == 0:
            shutil.chown(self.conf, "postgres", "postgres")
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                *as_postgres_user(),
                postgres_bin("postgres"),
                "-D",
                str(self.data),
                "-c",
                f"config_file={self.conf}",
                # Where it listens is the only change to the operator's postgresql.conf: the
                # pod's own IP here is the Service's ClusterIP.
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"port={self.port}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "shared_buffers=32MB",
                "-c",
                f"hba_file={self.hba}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.data.parent / "postgres.log").open("ab"),
            start_new_session=True,
        )
        try:
            _wait_listening(self.host, self.port, self.process, "postgres")
        except ServerStartFailed as err:
            log = (self.data.parent / "postgres.log").read_text(errors="replace")[-1500:]
            raise ServerStartFailed(f"{err}: {log}") from None

    def kill(self) -> None:
        """SIGKILL to the server and its backends: the pod's node died."""
        self._signal(9)

    def stop(self) -> None:
        self._signal(2)  # a fast shutdown, as on a pod's termination

    def restart(self) -> None:
        with self.lock:
            self.stop()
            self._start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal(self, signum: int) -> None:
        with self.lock:
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signum)
                self.process.wait(30)


class StandInRedis:
    def __init__(self, root: Path, conf: str, auth: str, host: str, port: int) -> None:
        self.root, self.host, self.port = root, host, port
        self.password = auth.split(None, 1)[1].strip()
        (root / "auth.conf").write_text(auth)
        data = root / "data"
        data.mkdir(exist_ok=True)
        # The pod's volumes, where this process finds them: the ConfigMap's redis.conf with
        # the mount paths of its volumes pointing here, and its bind address the ClusterIP.
        text = conf.replace("/etc/redis-auth/auth.conf", str(root / "auth.conf"))
        text = text.replace("/etc/redis-tls/", str(root / "tls") + "/")
        text = text.replace("dir /data", f"dir {data}").replace("bind * -::*", f"bind {host}")
        (root / "redis.conf").write_text(text)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        text = (self.root / "redis.conf").read_text()
        ports = (
            ["--port", "0", "--tls-port", str(self.port)]  # spec.tls: the TLS port only
            if "\ntls-port " in text
            else ["--port", str(self.port)]
        )
        self.process = subprocess.Popen(
            ["redis-server", str(self.root / "redis.conf"), *ports],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.host, self.port, self.process, "redis-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _was_rolled_out(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Progressing" and c.get("reason") == "NewReplicaSetAvailable"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


PROBE_PERIOD = 1.0


class StandInDashboard:
    """`eval-runner dashboard` as the dashboard pod's container would run it."""

    def __init__(
        self, root: Path, args: list[str], env: dict[str, str], host: str, hosts: Path
    ) -> None:
        from tests.support.job_controller import with_hosts_file

        self.root, self.host = root, host
        self.port = int(args[args.index("--port") + 1])
        self.log = root / "dashboard.log"
        repo = Path(__file__).resolve().parents[2]
        self.command = with_hosts_file(
            hosts, [sys.executable, "-m", "eval_runner", *args, "--host", host]
        )
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.pathsep.join(str(repo / p) for p in ("api", "runner")),
            **env,
        }
        self.process: subprocess.Popen | None = None
        self._ready, self._probed_at = False, float("-inf")

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self._probed_at = float("-inf")  # a new process: probe it at once
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        """The readinessProbe, at most every PROBE_PERIOD seconds as the kubelet's period
        spaces it (the controller's loop runs every 0.2 s)."""
        now = time.monotonic()
        if now - self._probed_at >= PROBE_PERIOD:
            self._ready, self._probed_at = self._probe(), now
        return self._ready

    def _probe(self) -> bool:
        """GET /readyz answers 200 (HTTPS, unverified as the kubelet's probes are, with
        spec.tls)."""
        with contextlib.suppress(OSError):
            with socket.create_connection((self.host, self.port), 1) as raw:
                conn = raw
                if "--tls-cert" in self.command:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    conn = context.wrap_socket(raw)
                conn.settimeout(6)
                conn.sendall(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
                return conn.recv(64).split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]
        return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(30)


class StackController:
    """The stand-in controllers, kubelet and DNS for suites, in a thread (see the module)."""

    def __init__(self, api: KubeAPIServer, interval: float = 0.2) -> None:
        self.api = api
        self.interval = interval
        self.root = Path(tempfile.mkdtemp(prefix="evals-stack-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.hosts_file = self.root / "hosts"
        self.hosts_file.write_text("127.0.0.1 localhost\n")
        self.postgres_servers: dict[tuple[str, str], StandInPostgres] = {}  # by (ns, claim)
        self.redis_servers: dict[tuple[str, str], StandInRedis] = {}  # by (ns, deployment)
        self.dashboards: dict[tuple[str, str], tuple[str, StandInDashboard]] = {}  # + pod spec
        self._sets: dict[tuple[str, str], str] = {}  # (ns, set) -> its uid, once running
        # (ns, set or deployment) -> the pod template its running server was started from.
        self._templates: dict[tuple[str, str], str] = {}
        self.rollouts: list[tuple[str, str]] = []  # (ns, workload), in order
        self._paused: set[tuple[str, str]] = set()  # servers a test took away
        self.errors: list[BaseException] = []
        self.start_failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stack-controller", daemon=True)

    def __enter__(self) -> StackController:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for server in self.postgres_servers.values():
            server.kill()
        for server in self.redis_servers.values():
            server.kill()
        for _, dashboard in self.dashboards.values():
            dashboard.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- what tests use -------------------------------------------------------------------

    def postgres(self, namespace: str, statefulset: str) -> StandInPostgres:
        return self.postgres_servers[(namespace, f"data-{statefulset}-0")]

    def redis(self, namespace: str, deployment: str) -> StandInRedis:
        return self.redis_servers[(namespace, deployment)]

    def pause(self, namespace: str, name: str) -> None:
        """Keep a server down that a test killed (no restart by the stand-in kubelet)."""
        self._paused.add((namespace, name))

    def resume(self, namespace: str, name: str) -> None:
        self._paused.discard((namespace, name))

    # --- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write_hosts()
                self._statefulsets()
                self._deployments()
                self._claims_gone()
                self._volumes()
            except APIError:
                pass  # something was deleted meanwhile: the next round sees it gone
            except ServerStartFailed as err:
                # A container that exits at start: the kubelet starts it again (CrashLoopBackOff),
                # as this loop's next round does. Kept for a failing test's diagnostics.
                self.start_failures.append(str(err))
            except Exception as err:  # a harness bug: the test asserts there was none
                self.errors.append(err)

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost"]
        for service in self.api.list("", "v1", "services"):
            ip = (service.get("spec") or {}).get("clusterIP")
            if not ip or ip == "None":
                continue
            meta = service["metadata"]
            base = f"{meta['name']}.{meta['namespace']}.svc"
            lines.append(f"{ip} {base} {base}.cluster.local")
        text = "\n".join(lines) + "\n"
        if self.hosts_file.read_text() != text:
            # In place: each pod's bind mount holds this very inode.
            with self.hosts_file.open("r+") as hosts:
                hosts.write(text)
                hosts.truncate()

    def _service_ip(self, namespace: str, pod_labels: dict[str, str]) -> str | None:
        for service in self.api.list("", "v1", "services", namespace=namespace):
            spec = service.get("spec") or {}
            selector = spec.get("selector") or {}
            if spec.get("clusterIP") in (None, "None") or not selector:
                continue
            if all(pod_labels.get(k) == v for k, v in selector.items()):
                return spec["clusterIP"]
        return None

    def _secret_value(self, namespace: str, ref: dict[str, Any]) -> str | None:
        secret = self.api.get("", "v1", "secrets", namespace, ref["name"])
        if secret is None:
            return None
        value = (secret.get("data") or {}).get(ref["key"])
        return base64.b64decode(value).decode() if value is not None else None

    def _secret_files(
        self, namespace: str, volume: dict[str, Any], target: Path, owner: str | None = None
    ) -> bool:
        """A Secret volume (or a projected one of Secrets) written to `target`; False while a
        Secret or key is missing (the kubelet keeps the pod in ContainerCreating)."""
        sources = (
            [{"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}}]
            if "secret" in volume
            else volume.get("projected", {}).get("sources", [])
        )
        target.mkdir(parents=True, exist_ok=True)
        if owner and os.geteuid() == 0:
            shutil.chown(target, owner, owner)
        for source in sources:
            ref = source.get("secret")
            if ref is None:
                continue
            for item in ref.get("items") or []:
                value = self._secret_value(namespace, {"name": ref["name"], "key": item["key"]})
                if value is None:
                    return False
                path = target / item["path"]
                path.write_text(value)
                path.chmod(0o600)
                if owner and os.geteuid() == 0:
                    shutil.chown(path, owner, owner)
        return True

    def _env(self, namespace: str, container: dict[str, Any]) -> dict[str, str] | None:
        env = {}
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "secretKeyRef" in entry.get("valueFrom", {}):
                value = self._secret_value(namespace, entry["valueFrom"]["secretKeyRef"])
                if value is None:
                    return None  # CreateContainerConfigError: wait for the Secret
                env[entry["name"]] = value
        return env

    def _statefulsets(self) -> None:
        for sts in self.api.list("apps", "v1", "statefulsets"):
            meta = sts["metadata"]
            namespace, name = meta["namespace"], meta["name"]
            if SUITE_LABEL not in (meta.get("labels") or {}):
                self._roll_out("statefulsets", sts)
                continue
            claim = f"data-{name}-0"
            server = self.postgres_servers.get((namespace, claim))
            replaced = self._sets.get((namespace, name)) not in (None, meta["uid"])
            if server is not None and replaced and self._deleted_orphaning(namespace, name):
                # The old set was deleted with propagationPolicy Orphan: its pod ran on, and
                # the new set adopts it (and its claim), as the StatefulSet controller does.
                self._sets[(namespace, name)] = meta["uid"]
                self._ensure_claim(sts, claim)
            if server is None or self._sets.get((namespace, name)) != meta["uid"]:
                server = self._start_store(sts, claim)
                if server is None:
                    continue
            elif self._templates.get((namespace, name)) not in (
                None,
                repr(sts["spec"]["template"]),
            ):
                # A rollout: the pod is replaced by one of the new template.
                server.stop()
                self.rollouts.append((namespace, name))
                server = self._start_store(sts, claim)
                if server is None:
                    continue
            if (namespace, claim) not in self._paused and not server.alive():
                server.start()  # the kubelet restarts a crashed container
            self._report(sts, ready=server.alive() and _listening(server.host, server.port))

    def _start_store(self, sts: dict[str, Any], claim: str) -> StandInPostgres | None:
        meta, spec = sts["metadata"], sts["spec"]
        namespace = meta["namespace"]
        pod = spec["template"]
        container = pod["spec"]["containers"][0]
        env = self._env(namespace, container)
        ip = self._service_ip(namespace, pod["metadata"].get("labels") or {})
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        config = self.api.get(
            "", "v1", "configmaps", namespace, volumes["config"]["configMap"]["name"]
        )
        if env is None or ip is None or config is None:
            return None
        self._ensure_claim(sts, claim)
        previous = self.postgres_servers.get((namespace, claim))
        if previous is not None:
            previous.kill()  # a set replaced under the same name: its old pod is gone
        data_root = self.root / namespace / claim
        fresh = not (data_root / "data").exists()
        data_root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.root / namespace, data_root):
                shutil.chown(path, "postgres", "postgres")
        port = next(p["containerPort"] for p in container["ports"])
        conf, hba = config["data"]["postgresql.conf"], None
        if "tls" in volumes:  # spec.tls: the certificate's Secret, as the kubelet mounts it
            tls_dir = data_root / "tls"
            if not self._secret_files(namespace, volumes["tls"], tls_dir, owner="postgres"):
                return None  # ContainerCreating until cert-manager wrote it
            conf = conf.replace("/etc/postgresql/tls/", f"{tls_dir}/")
            hba = data_root / "pg_hba.conf"
            hba.write_text(config["data"]["pg_hba.conf"])
            if os.geteuid() == 0:
                shutil.chown(hba, "postgres", "postgres")
            conf = conf.replace("/etc/postgresql/pg_hba.conf", str(hba))
        server = StandInPostgres(data_root / "data", conf, ip, port, hba)
        if fresh:
            server.initdb(env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
        else:
            server.start()  # the claim was kept: its data, and the password it was made with
        self.postgres_servers[(namespace, claim)] = server
        self._sets[(namespace, meta["name"])] = meta["uid"]
        self._templates[(namespace, meta["name"])] = repr(pod)
        return server

    def _ensure_claim(self, sts: dict[str, Any], claim: str) -> None:
        """The claim from the volumeClaimTemplate, as the StatefulSet controller makes it."""
        meta, spec = sts["metadata"], sts["spec"]
        namespace = meta["namespace"]
        existing = self.api.get("", "v1", "persistentvolumeclaims", namespace, claim)
        policy = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenDeleted")
        owner = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        if existing is None:
            template = spec["volumeClaimTemplates"][0]
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim,
                    "namespace": namespace,
                    "labels": template["metadata"].get("labels") or {},
                },
                "spec": template["spec"],
            }
            if policy == "Delete":
                body["metadata"]["ownerReferences"] = [owner]
            self.api.create(body)  # bound by _volumes, as every claim of a suite
        elif policy == "Delete" and not existing["metadata"].get("ownerReferences"):
            # A kept claim adopted by a set that deletes its claims.
            existing["metadata"]["ownerReferences"] = [owner]
            self.api.replace(existing)

    def _claims_gone(self) -> None:
        """A deleted claim takes its data along (and stops the pod that used it)."""
        for (namespace, claim), server in list(self.postgres_servers.items()):
            claim_exists = (
                self.api.get("", "v1", "persistentvolumeclaims", namespace, claim) is not None
            )
            sts = claim.removeprefix("data-").removesuffix("-0")
            set_exists = self.api.get("apps", "v1", "statefulsets", namespace, sts) is not None
            if not set_exists and not self._deleted_orphaning(namespace, sts):
                server.stop()
                self._sets.pop((namespace, sts), None)
            if not claim_exists:
                server.kill()
                shutil.rmtree(server.data.parent, ignore_errors=True)
                del self.postgres_servers[(namespace, claim)]

    def _deleted_orphaning(self, namespace: str, sts: str) -> bool:
        """Whether the set's last deletion left its pod (propagationPolicy Orphan)."""
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{sts}"
        deletions = self.api.find_requests("DELETE", path)
        if not deletions:
            return False
        body = deletions[-1].body if isinstance(deletions[-1].body, dict) else {}
        policy = deletions[-1].query.get("propagationPolicy") or body.get("propagationPolicy")
        return policy == "Orphan"

    def _volumes(self) -> None:
        """The provisioner and binder (a volume of the size asked, the claim Bound to it at
        once, as with an Immediate StorageClass), then the external resizer and the kubelet:
        a bound claim asked for more gets it (the resize admission plugin let the request
        through only where its class expands)."""
        for pvc in self.api.list("", "v1", "persistentvolumeclaims"):
            meta = pvc["metadata"]
            if SUITE_LABEL not in (meta.get("labels") or {}):
                continue
            status = pvc.get("status") or {}
            wanted = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage")
            have = (status.get("capacity") or {}).get("storage")
            if wanted is None:
                continue
            if status.get("phase") != "Bound":
                pvc["spec"]["volumeName"] = f"pvc-{meta['uid']}"
                self.api.replace(pvc)
                status = {"phase": "Bound", "capacity": {"storage": wanted}}
            elif have is not None and parse_quantity(wanted) > parse_quantity(have):
                status = {"capacity": {"storage": wanted}}
            else:
                continue
            self.api.patch_status(
                "", "v1", "persistentvolumeclaims", meta["namespace"], meta["name"], status
            )

    def _deployments(self) -> None:
        for deployment in self.api.list("apps", "v1", "deployments"):
            meta = deployment["metadata"]
            namespace, name = meta["namespace"], meta["name"]
            labels = meta.get("labels") or {}
            if SUITE_LABEL not in labels:
                self._roll_out("deployments", deployment)
                continue
            if labels.get("app.kubernetes.io/component") == "dashboard":
                self._dashboard(deployment)
                continue
            server = self.redis_servers.get((namespace, name))
            template = repr(deployment["spec"]["template"])
            if server is not None and self._templates.get((namespace, name)) != template:
                server.kill()  # a rollout: the pod is replaced by one of the new template
                del self.redis_servers[(namespace, name)]
                self.rollouts.append((namespace, name))
                server = None
            if server is None:
                server = self._start_cache(deployment)
                if server is None:
                    continue
                self._templates[(namespace, name)] = template
            if (namespace, name) not in self._paused and not server.alive():
                server.start()
            self._report(deployment, ready=server.alive() and _listening(server.host, server.port))
        for (namespace, name), server in list(self.redis_servers.items()):
            if self.api.get("apps", "v1", "deployments", namespace, name) is None:
                server.kill()
                del self.redis_servers[(namespace, name)]
        for (namespace, name), (_, dashboard) in list(self.dashboards.items()):
            if self.api.get("apps", "v1", "deployments", namespace, name) is None:
                dashboard.kill()
                del self.dashboards[(namespace, name)]

    def dashboard(self, namespace: str, deployment: str) -> StandInDashboard:
        return self.dashboards[(namespace, deployment)][1]

    def _dashboard(self, deployment: dict[str, Any]) -> None:
        """One replica of the dashboard; a changed pod template replaces it (a rollout)."""
        meta = deployment["metadata"]
        namespace, key = meta["namespace"], (meta["namespace"], meta["name"])
        pod = deployment["spec"]["template"]
        template = repr(pod)
        running = self.dashboards.get(key)
        if running is None or running[0] != template:
            container = pod["spec"]["containers"][0]
            env = self._env(namespace, container)
            ip = self._service_ip(namespace, pod["metadata"].get("labels") or {})
            if env is None or ip is None:
                self._report(deployment, ready=False)
                return
            if running is not None:
                running[1].kill()
            root = self.root / namespace / f"dashboard-{meta['name']}"
            root.mkdir(parents=True, exist_ok=True)
            args = list(container["args"])
            # Its Secret volumes (spec.tls: its certificate, the stack's CA files), where this
            # process finds them.
            volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
            for mount in container.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                if "secret" not in volume and "projected" not in volume:
                    continue
                target = root / mount["name"]
                if not self._secret_files(namespace, volume, target):
                    self._report(deployment, ready=False)
                    return
                prefix = mount["mountPath"] + "/"

                def moved(value: str, prefix: str = prefix, target: Path = target) -> str:
                    return f"{target}/{value[len(prefix) :]}" if value.startswith(prefix) else value

                args = [moved(a) for a in args]
                env = {k: moved(v) for k, v in env.items()}
            running = (template, StandInDashboard(root, args, env, ip, self.hosts_file))
            self.dashboards[key] = running
        dashboard = running[1]
        if not dashboard.alive():
            dashboard.start()
        self._report(deployment, ready=dashboard.ready())

    def _start_cache(self, deployment: dict[str, Any]) -> StandInRedis | None:
        meta = deployment["metadata"]
        namespace = meta["namespace"]
        pod = deployment["spec"]["template"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        ip = self._service_ip(namespace, pod["metadata"].get("labels") or {})
        config = self.api.get(
            "", "v1", "configmaps", namespace, volumes["config"]["configMap"]["name"]
        )
        auth_ref = volumes["auth"]["secret"]
        auth = self._secret_value(
            namespace, {"name": auth_ref["secretName"], "key": auth_ref["items"][0]["key"]}
        )
        if ip is None or auth is None or config is None:
            return None
        root = self.root / namespace / f"redis-{meta['name']}"
        root.mkdir(parents=True, exist_ok=True)
        if "tls" in volumes and not self._secret_files(namespace, volumes["tls"], root / "tls"):
            return None
        port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"])
        server = StandInRedis(root, config["data"]["redis.conf"], auth, ip, port)
        server.start()
        self.redis_servers[(namespace, meta["name"])] = server
        return server

    def _report(self, obj: dict[str, Any], *, ready: bool) -> None:
        status = rolled_out(obj)
        if not ready:
            for key in ("readyReplicas", "availableReplicas"):
                status[key] = 0
            for condition in status.get("conditions") or []:
                if condition["type"] == "Available":
                    condition.update(status="False", reason="MinimumReplicasUnavailable")
                # As the Deployment controller says: NewReplicaSetAvailable once the rollout
                # was complete (it stays when pods are lost later), ReplicaSetUpdated before.
                if condition["type"] == "Progressing" and not _was_rolled_out(obj):
                    condition.update(reason="ReplicaSetUpdated")
        current = obj.get("status") or {}
        if all(current.get(k) == status.get(k) for k in ("readyReplicas", "observedGeneration")):
            return
        meta = obj["metadata"]
        plural = "statefulsets" if obj["kind"] == "StatefulSet" else "deployments"
        self.api.patch_status("apps", "v1", plural, meta["namespace"], meta["name"], status)

    def _roll_out(self, plural: str, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        if status.get("observedGeneration") == obj["metadata"].get("generation"):
            return
        meta = obj["metadata"]
        self.api.patch_status(
            "apps", "v1", plural, meta["namespace"], meta["name"], rolled_out(obj)
        )
