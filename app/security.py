"""Logins, and what every HTTP request must satisfy before Gradio sees it.

- Passwords: `--auth-file` lines `user:scrypt$N$r$p$salt$hash` (hashlib.scrypt, a random 16-byte
  salt per user; `python app.py --hash-password` prints one). `--auth USER:PASSWORD` still works,
  hashed the same way at start-up, but shows the password in `ps`.
- Failed logins are rate-limited per user name: after `MAX_FAILURES` within `WINDOW_S` seconds
  every attempt for that name is refused, right or wrong, until the oldest failure ages out.
- `RequestGuard` (ASGI middleware) refuses a request whose `Host` is not the bound address (or an
  `--allowed-host`), which stops DNS rebinding from reading a local instance, a request body over
  `max_body` bytes (uploads are capped separately by Gradio's `max_file_size`) and, with logins, a
  Gradio session hash sent by another login than the one that first used it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, defaultdict, deque
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

SCRYPT = dict(n=2**14, r=8, p=1)  # about 50 ms and 16 MB per check
MAX_FAILURES = 5
WINDOW_S = 300.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AuthFileError(ValueError):
    """An --auth-file line that is not `user:scrypt$…`; the message names the line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` of `password` (base64 salt and hash).

    Example:
        >>> verify_password("secret", hash_password("secret"))
        True
    """
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, **SCRYPT, dklen=32)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        kind, n, r, p, salt, digest = encoded.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=2**26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def read_auth_file(path: str | Path) -> dict[str, str]:
    """{user: encoded hash} from lines `user:scrypt$…` (blank lines and `#` comments skipped)."""
    users = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded.startswith("scrypt$") or encoded.count("$") != 5:
            raise AuthFileError(f"{path}, line {number}: expected USER:scrypt$… (make one with: python app.py --hash-password)")
        users[user] = encoded
    if not users:
        raise AuthFileError(f"{path} holds no users")
    return users


class Authenticator:
    """Gradio's `auth` callable: checks hashed passwords and rate-limits failures per user name.

    Args:
        users: {user: encoded hash} (`hash_password`).
        clock: seconds, for tests.
    """

    def __init__(self, users: dict[str, str], clock=time.monotonic) -> None:
        self.users = dict(users)
        self.clock = clock
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._dummy = hash_password(secrets.token_urlsafe(8))  # unknown users cost the same time

    @classmethod
    def from_passwords(cls, pairs) -> "Authenticator":
        return cls({user: hash_password(password) for user, password in pairs})

    def locked(self, user: str) -> bool:
        with self._lock:
            failures = self._failures[user]
            while failures and self.clock() - failures[0] > WINDOW_S:
                failures.popleft()
            return len(failures) >= MAX_FAILURES

    def __call__(self, user: str, password: str) -> bool:
        if self.locked(user):
            logger.warning("login refused for %r: too many failed attempts", user)
            return False
        ok = verify_password(password, self.users.get(user, self._dummy)) and user in self.users
        if not ok:
            with self._lock:
                self._failures[user].append(self.clock())
        return ok


def allowed_hosts(bound: str, extra=()) -> set[str]:
    """The `Host` names a server bound to `bound` answers to, plus `extra`.

    Loopback: 127.0.0.1, localhost, ::1. Every interface (0.0.0.0, ::): also any IP literal ("*ip*"),
    which DNS rebinding cannot forge; a host *name* must then be given with --allowed-host.
    """
    extra = {h.lower() for h in extra}
    if bound in ("0.0.0.0", "::", ""):
        return {"*ip*", *LOOPBACK, *extra}
    return ({*LOOPBACK} if bound in LOOPBACK else {bound.lower()}) | extra


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:7860
        return header[1 : header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI middleware: refuse a wrong `Host` (403), a body over `max_body` bytes (413) and, with logins, a
    Gradio session hash used by another login than the one that first used it (403), each with one sentence.

    Gradio keeps a session's state and its event stream under the session hash alone; binding each hash
    to its login means a hash learnt by another user opens neither (the handlers check the login too).

    Args:
        app: the ASGI app (Gradio's FastAPI app).
        hosts: from `allowed_hosts`; "*ip*" accepts any IP literal (a server bound to every interface).
        max_body: bytes one request body may hold.
        suffixes: host name endings also accepted (".gradio.live" with --share).
    """

    def __init__(self, app, hosts: set[str], max_body: int, suffixes: tuple[str, ...] = ()) -> None:
        self.app, self.hosts, self.max_body, self.suffixes = app, hosts, max_body, suffixes
        self.sessions = SessionOwners()

    def host_ok(self, header: str) -> bool:
        name = _host_name(header)
        return name in self.hosts or ("*ip*" in self.hosts and _is_ip(name)) or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.host_ok(headers.get("host", "")):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _refuse(send, 403, "This server does not answer to that host name; use the address it was started on.")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        length = headers.get("content-length")
        too_large = f"The request is larger than {self.max_body // 1_000_000} MB; send less at once."
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _refuse(send, 413, too_large)
        receive = _counted(receive, self.max_body)
        try:
            gradio = scope.get("app")
            if getattr(gradio, "auth", None) is not None and "/gradio_api/" in scope.get("path", ""):
                body, receive = await _buffered(receive) if scope.get("method") == "POST" else (b"", receive)
                hashes = _session_hashes(scope, body)
                if hashes is None:
                    return await _refuse(send, 400, "The request body is not the JSON object the workbench expects.")
                if not self.sessions.claim(_login(gradio, headers), hashes):
                    return await _refuse(send, 403, "This session belongs to another login; reload the page.")
            return await self.app(scope, receive, send)
        except BodyTooLarge:
            return await _refuse(send, 413, too_large)


class SessionOwners:
    """Which login first used each Gradio session hash (the most recent `limit` hashes)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.owners: OrderedDict[str, str] = OrderedDict()
        self.limit = limit

    def claim(self, login: str | None, hashes: list[str]) -> bool:
        """False when one of `hashes` belongs to another login (no login: Gradio refuses the request itself)."""
        if login is None:
            return True
        for h in hashes:
            owner = self.owners.setdefault(h, login)
            self.owners.move_to_end(h)
            if owner != login:
                return False
        while len(self.owners) > self.limit:
            self.owners.popitem(last=False)
        return True


def _login(gradio, headers: dict) -> str | None:
    """The login of the request's Gradio access-token cookie."""
    cookies = SimpleCookie(headers.get("cookie", ""))
    for name in (f"access-token-{gradio.cookie_id}", f"access-token-unsecure-{gradio.cookie_id}"):
        if name in cookies and cookies[name].value in gradio.tokens:
            return gradio.tokens[cookies[name].value]
    return None


def _runs_an_event(path: str) -> bool:
    """A POST whose JSON body names the session an event runs in: a queue join, or a direct or queued call."""
    return path.endswith("/queue/join") or "/gradio_api/run/" in path or "/gradio_api/call/" in path


def _session_hashes(scope, body: bytes) -> list[str] | None:
    """Session hashes a Gradio request names: `?session_hash=`, /heartbeat/H and /stream/H, `"session_hash"` in a JSON body.

    None when a body that names the session (`_runs_an_event`) cannot be read the way Gradio will read it:
    such a request is refused rather than let through unchecked.
    """
    found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [])
    path = scope.get("path", "")
    for marker in ("/heartbeat/", "/stream/"):
        if marker in path:
            found.append(path.split(marker, 1)[1].split("/", 1)[0])
    if body.strip():
        try:
            data = json.loads(body)  # as Gradio parses it: surrounding whitespace allowed
        except ValueError:
            return None if _runs_an_event(path) else found
        value = data.get("session_hash") if isinstance(data, dict) else None
        if value is not None and not isinstance(value, str):
            return None
        if isinstance(value, str):
            found.append(value)
    return found


def _counted(receive, limit: int):
    """`receive` that raises `BodyTooLarge` once more than `limit` body bytes have arrived."""
    received = 0

    async def counted():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLarge
        return message

    return counted


async def _buffered(receive):
    """Read the whole request body; returns (body, a `receive` that hands it to the app again)."""
    chunks, message = [], {"more_body": True}
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
    body, replayed = b"".join(chunks), False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


class BodyTooLarge(Exception):
    """A streamed request body passed the cap."""


async def _refuse(send, status: int, message: str) -> None:
    body = message.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
