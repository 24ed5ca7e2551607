"""Where the store is: a PostgreSQL URI or its parts, from the runner pod's environment (the
keys of a CloudNativePG app Secret) or from `eval-runner run --store`.

The password never appears in any text this module makes: not in repr or str of the
settings, not in an error message (errors name the variable or the part that is wrong, never
its value). `secrets()` gives the forms in which the password could appear elsewhere (as is,
percent-encoded, the whole URI) so that a process can redact them from what it prints.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from eval_api import environment

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432
URI_SCHEMES = ("postgresql", "postgres")
# Query parameters of a URI that the runner honours; any other is an error, not a no-op.
URI_PARAMETERS = ("sslmode", "sslrootcert")


class StoreSettingsError(ValueError):
    """The store's settings are wrong; the message names what, never a secret value."""


@dataclass(frozen=True)
class StoreSettings:
    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    sslrootcert: str | None = None
    # What else would show the password: the URI it came in, its percent-encoded form.
    secret_forms: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sslmode is not None and self.sslmode not in SSLMODES:
            raise StoreSettingsError(
                f"sslmode {self.sslmode!r} is not one of {', '.join(SSLMODES)}"
            )

    def __str__(self) -> str:
        return self.display()

    def display(self) -> str:
        """The URI without its password: what messages and logs may show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"postgresql://{quote(self.user, safe='')}@{host}:{self.port}/{self.dbname}"
        return text + (f"?sslmode={self.sslmode}" if self.sslmode else "")

    def secrets(self) -> list[str]:
        """Every form of the password (and the URI holding it) to redact from output."""
        if not self.password:
            return []
        return [self.password, quote(self.password, safe=""), *self.secret_forms]

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of asyncpg.connect."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "database": self.dbname,
            "password": self.password,
        }
        tls = self._ssl()
        if tls is not None:
            kwargs["ssl"] = tls
        return kwargs

    def _ssl(self) -> ssl.SSLContext | str | bool | None:
        mode = self.sslmode
        if mode is None:
            return None  # asyncpg's default, libpq's too: prefer
        if mode == "disable":
            return False
        # libpq verifies the server's chain once a root certificate is given, even for require.
        verify = mode in ("verify-ca", "verify-full") or (mode == "require" and self.sslrootcert)
        if not verify:
            return mode
        try:
            context = ssl.create_default_context(cafile=self.sslrootcert)
        except (OSError, ssl.SSLError) as err:
            raise StoreSettingsError(
                f"sslrootcert {self.sslrootcert}: cannot read a CA bundle there "
                f"({getattr(err, 'strerror', None) or type(err).__name__})"
            ) from None
        context.check_hostname = mode == "verify-full"
        return context

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        password: str | None = None,
        sslmode: str | None = None,
        sslrootcert: str | None = None,
        source: str = "the store URI",
    ) -> StoreSettings:
        """Settings from a postgresql:// URI. `password`, `sslmode` and `sslrootcert`, when
        given, replace the URI's own. `source` names the URI in error messages."""
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            raise StoreSettingsError(
                f"{source} is not a valid postgresql:// URI (its value is not shown)"
            ) from None
        if parts.scheme not in URI_SCHEMES:
            raise StoreSettingsError(
                f"{source} must start with postgresql:// (its value is not shown)"
            )
        if not parts.hostname:
            raise StoreSettingsError(f"{source} names no host")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(URI_PARAMETERS))
        if unknown:
            raise StoreSettingsError(
                f"{source} has parameters the runner does not support: {', '.join(unknown)} "
                f"(supported: {', '.join(URI_PARAMETERS)})"
            )
        user = unquote(parts.username or "")
        if not user:
            raise StoreSettingsError(f"{source} names no user")
        secret = password if password else (unquote(parts.password) if parts.password else None)
        raw_password = parts.password or ""
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORT,
            dbname=unquote(parts.path.lstrip("/")) or user,
            user=user,
            password=secret,
            sslmode=sslmode or query.get("sslmode") or None,
            sslrootcert=sslrootcert or query.get("sslrootcert") or None,
            secret_forms=tuple(form for form in (uri, raw_password) if form),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StoreSettings | None:
        """The store of a runner pod: EVAL_STORE_URI (which wins when the parts are set too),
        or EVAL_STORE_HOST with PORT, DBNAME, USER and PASSWORD; EVAL_STORE_SSLMODE and
        EVAL_STORE_SSLROOTCERT apply to either (and replace the URI's own). None when neither
        URI nor host is set: no store."""
        env = _with_secret_keys(env)
        uri = env.get(environment.STORE_URI) or None
        host = env.get(environment.STORE_HOST) or None
        password = env.get(environment.STORE_PASSWORD) or None
        sslmode = env.get(environment.STORE_SSLMODE) or None
        sslrootcert = env.get(environment.STORE_SSLROOTCERT) or None
        if uri is None and host is None:
            return None
        # A CloudNativePG app Secret holds both the uri and its parts (the operator passes
        # every key it may hold): the uri, when there, is the whole answer; the password key
        # only fills in a uri that has none.
        if uri is not None:
            try:
                uri_has_password = bool(urlsplit(uri).password)
            except ValueError:
                uri_has_password = False  # from_uri says what is wrong with it
            return cls.from_uri(
                uri,
                password=None if uri_has_password else password,
                sslmode=sslmode,
                sslrootcert=sslrootcert,
                source=environment.STORE_URI,
            )
        assert host is not None
        port_text = env.get(environment.STORE_PORT) or str(DEFAULT_PORT)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise StoreSettingsError(f"{environment.STORE_PORT}={port_text!r} is not a port")
        user = env.get(environment.STORE_USER) or None
        if user is None:
            raise StoreSettingsError(
                f"{environment.STORE_HOST} is set but {environment.STORE_USER} is not"
            )
        return cls(
            host=host,
            port=int(port_text),
            dbname=env.get(environment.STORE_DBNAME) or user,
            user=user,
            password=password,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
        )


def _with_secret_keys(env: Mapping[str, str]) -> Mapping[str, str]:
    """The variables a Secret imported whole (environment.STORE_SECRET_PREFIX + its keys)
    stands for; when it was imported, it is the store's only source."""
    prefix = environment.STORE_SECRET_PREFIX
    if not any(name.startswith(prefix) for name in env):
        return env
    merged = {k: v for k, v in env.items() if k not in environment.STORE_SECRET_KEYS.values()}
    for key, name in environment.STORE_SECRET_KEYS.items():
        if env.get(prefix + key):
            merged[name] = env[prefix + key]
    return merged
