"""Who is calling: the verified token's subject, else the client's address.

Rate limits and idempotency keys are scoped by it.
"""

from __future__ import annotations

from sanic import Request

from app.auth.tokens import verified_subject
from app.http.client import address_key, client_ip
from app.settings import Settings


def subject_of(request: Request) -> str | None:
    """The user id of the request's valid bearer token, if it sent one.

    The one place that knows where identity comes from: rate limits and idempotency keys
    are scoped by it, else by client IP. The token is verified once per request, by
    `app.auth.verified_subject` here (in middleware) or by `authorize` in the handler: both
    keep the claims on `request.ctx`, so a write never pays for a second verification. An
    invalid one counts as no token.
    """
    subject: str | None = getattr(request.ctx, "subject", None)
    if subject is not None:
        return subject
    if getattr(request.app.ctx, "auth", None) is None:
        return None
    return verified_subject(request)


def caller_key(request: Request) -> str:
    """Who is calling: `sub:<subject>` with a verified token, else `ip:<client address>`."""
    subject = subject_of(request)
    if subject is not None:
        return f"sub:{subject}"
    settings: Settings = request.app.ctx.settings
    return f"ip:{client_ip(request, settings.TRUSTED_PROXIES)}"


def count_key(request: Request) -> str:
    """The key a request is counted under: its subject, else its address (IPv6: its /64)."""
    subject = subject_of(request)
    if subject is not None:
        return f"sub:{subject}"
    settings: Settings = request.app.ctx.settings
    return address_key(client_ip(request, settings.TRUSTED_PROXIES))
