"""The process's API keys: checked once when read, and redacted from any text that leaves it.

A key is checked before the first request: a line break or a character outside latin-1
cannot go into an HTTP header, and would otherwise surface later inside an error text (as
`b'Bearer sk-...'`) or crash the shard with the key in its traceback. Every text the runner
emits (error details, log lines, the shard summary) goes through `redact`, which knows each
key in every form an error message may print it: as is, as Python prints it inside a str or
bytes repr, and JSON-escaped.
"""

from __future__ import annotations

import json
from urllib.parse import unquote, urlsplit

from eval_runner.errors import PermanentError

REDACTED = "[redacted]"


class Secrets:
    def __init__(self) -> None:
        self._forms: list[str] = []

    def add(self, key: str) -> None:
        forms = {
            key,
            repr(key)[1:-1],
            json.dumps(key)[1:-1],
            repr(key.encode("utf-8", "backslashreplace"))[2:-1],
            repr(key.encode("latin-1", "backslashreplace"))[2:-1],
        }
        # Longest first: a form that contains another is replaced whole.
        self._forms = sorted(set(self._forms) | {f for f in forms if f}, key=len, reverse=True)

    def add_url(self, text: str) -> None:
        """A URL that may carry a password (a store or cache URL): the URL and its password,
        as written and percent-decoded. Text that is not such a URL adds nothing."""
        if "://" not in text:
            return
        try:
            password = urlsplit(text).password
        except ValueError:
            password = None
        if password:
            self.add(text)
            self.add(password)
            self.add(unquote(password))

    def redact(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


# The one registry of the process: keys are added as they are read (read_key), and the log
# renderer and the model clients redact with it.
SECRETS = Secrets()


def read_key(name: str, value: str | None) -> str | None:
    """The key in environment variable `name`, registered for redaction and checked: None when
    unset or empty, InvalidAPIKey (permanent) when it cannot be sent in a header. The trailing
    newline that `echo key | kubectl create secret ...` leaves is not part of the key."""
    if value is None:
        return None
    key = value.strip()
    if not key:
        return None
    SECRETS.add(key)
    SECRETS.add(value)
    for position, char in enumerate(key, start=1):
        code = ord(char)
        if char in "\r\n":
            problem = "a line break"
        elif code < 0x20 or code == 0x7F:
            problem = "a control character"
        elif code > 0xFF:
            problem = "a character outside latin-1"
        else:
            continue
        raise PermanentError(
            "InvalidAPIKey",
            f"{name} holds {problem} at position {position} of {len(key)}, which cannot be "
            "sent in an HTTP header: check the Secret's value (the key itself is not shown)",
        )
    return key
