"""Who owns a session's relations and feedback, and who may see everyone's feedback.

An owner id is what the store files rows under; it is never a credential:

    user:NAME       the login, with --auth (Gradio checked the password; the name comes from the request)
    browser:HMAC    without --auth: the browser holds a random token (256 bits, issued by the server,
                    kept in its localStorage); the store keeps only HMAC(server key, token), so an
                    owner id seen anywhere cannot be turned back into the token that opens it
    session:HMAC    an API client that never loaded the page: HMAC of its Gradio session hash

The HMAC key is created once per database and never leaves the server (unlike the BrowserState
secret, which Gradio sends to every browser in /config). Admins (`--admin USER`, only with --auth)
may view and export everyone's feedback; nobody else ever sees another owner's rows or owner id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def username(request) -> str | None:
    """The logged-in user of a `gr.Request` (None without --auth or without a request)."""
    if request is None:
        return None
    return getattr(request, "username", None) or None


class Identity:
    """Owner ids from requests, browser tokens and the admin list.

    Args:
        key: the server-side HMAC key (`Store.secret("owner_key")`).
        admins: logins that may see everyone's feedback.

    Example:
        >>> ident = Identity("k", admins=["ann"])
        >>> token = ident.issue_token()
        >>> ident.browser_owner(token).startswith("browser:"), ident.browser_owner(token) == ident.browser_owner(token)
        (True, True)
    """

    def __init__(self, key: str, admins=()) -> None:
        self._key = key.encode("utf-8")
        self.admins = frozenset(admins)

    def _mac(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{kind}\0{value}".encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        return f"{kind}:{digest}"

    @staticmethod
    def issue_token() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def valid_token(token) -> bool:
        return isinstance(token, str) and TOKEN_RE.fullmatch(token) is not None

    def browser_owner(self, token: str) -> str:
        return self._mac("browser", token)

    def session_owner(self, session_hash: str | None) -> str:
        return self._mac("session", session_hash or secrets.token_urlsafe(16))

    def is_admin(self, request) -> bool:
        name = username(request)
        return name is not None and name in self.admins
