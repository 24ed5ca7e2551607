"""What the EvalSuite tests share: suite manifests, condition reasons, and reading the store a
suite's stand-in PostgreSQL serves (tests/support/stack_controller.py)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import asyncpg

from tests.support.operator_cluster import GROUP, NS, VERSION, Cluster


def suite_manifest(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EvalSuite",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec or {},
    }


def reason(obj: dict[str, Any] | None, type_: str) -> str | None:
    """The reason of the object's condition of that type, None while it has none."""
    found = [
        c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_
    ]
    return found[0]["reason"] if found else None


def secret_value(cluster: Cluster, name: str, key: str) -> str:
    secret = cluster.api.get("", "v1", "secrets", NS, name)
    assert secret is not None, name
    return base64.b64decode(secret["data"][key]).decode()


def store_rows(cluster: Cluster, suite: str, query: str, *args: Any) -> list[Any]:
    """`query` on the suite's managed store, with the password from its generated Secret."""
    assert cluster.stack is not None
    server = cluster.stack.postgres(NS, f"{suite}-store")

    async def fetch() -> list[Any]:
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user="evals",
            password=secret_value(cluster, f"{suite}-store-credentials", "password"),
            database="evals",
        )
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())
