"""`eval-runner dashboard`: the results dashboard's process (an EvalSuite's Deployment)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from typing import Any

from eval_api import environment
from eval_api.store.settings import StoreSettings, StoreSettingsError
from eval_runner.secrets import SECRETS
from eval_runner.stackcheck import register_secrets

DEFAULT_PORT = 8080


def add_parser(commands: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="serve the results dashboard (JSON API, HTML, /metrics) over the store",
        description=(
            "Serve the results dashboard over the store of the environment "
            f"({environment.STORE_URI}, or {environment.STORE_HOST} and its parts: the "
            f"read-only role's) and the cache ({environment.CACHE_URL}, for /readyz). "
            f"{environment.DASHBOARD_TRUSTED_PROXIES}: the CIDRs of the proxies in front of it "
            "(comma-separated), whose X-Forwarded-For names the client the rate limit counts."
        ),
    )
    dashboard.add_argument("--host", default=None, help="address to listen on (default all)")
    dashboard.add_argument("--port", type=int, default=DEFAULT_PORT)
    dashboard.add_argument("--namespace", help="the suite's namespace: the home page shows it")
    dashboard.add_argument("--suite", help="the suite this dashboard serves")
    dashboard.add_argument(
        "--rate", type=float, default=20.0, help="requests a second per client (default 20)"
    )
    dashboard.add_argument(
        "--burst", type=int, default=40, help="requests a client may send at once (default 40)"
    )
    dashboard.add_argument(
        "--response-seconds",
        type=float,
        default=2.0,
        help="how long a leaderboard or history answer is reused (default 2; 0 never)",
    )
    dashboard.add_argument("--pool-size", type=int, default=10, help="store connections")
    dashboard.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    dashboard.add_argument("--tls-key", help="... and this key (PEM)")
    dashboard.set_defaults(command=cmd_dashboard)


def cmd_dashboard(args: Any) -> int:
    from eval_runner.dashboard.app import DashboardConfig, serve

    register_secrets(os.environ)
    try:
        store = StoreSettings.from_env(os.environ)
    except StoreSettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if store is None:
        print(
            f"error: no store: set {environment.STORE_URI} or {environment.STORE_HOST}",
            file=sys.stderr,
        )
        return 2
    for form in store.secrets():
        SECRETS.add(form)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.rate <= 0 or args.burst < 1:
        print("error: --rate must be positive and --burst at least 1", file=sys.stderr)
        return 2
    proxies = os.environ.get(environment.DASHBOARD_TRUSTED_PROXIES, "")
    try:
        trusted = tuple(
            ipaddress.ip_network(cidr.strip(), strict=False)
            for cidr in proxies.split(",")
            if cidr.strip()
        )
    except ValueError as err:
        print(f"error: {environment.DASHBOARD_TRUSTED_PROXIES}: {err}", file=sys.stderr)
        return 2
    config = DashboardConfig(
        store=store,
        cache_url=(
            os.environ.get(environment.CACHE_URL)
            or os.environ.get(environment.CACHE_ENDPOINT)
            or None
        ),
        cache_ca_file=os.environ.get(environment.CACHE_CA_FILE) or None,
        namespace=args.namespace,
        suite=args.suite,
        rate=args.rate,
        burst=args.burst,
        trusted_proxies=trusted,
        response_seconds=args.response_seconds,
        pool_size=args.pool_size,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(config, args.host, args.port))
    return 0
