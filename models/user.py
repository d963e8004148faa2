"""The user aggregate: accounts that log in, and the refresh tokens they hold."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class User(Model):
    """An account; the password is stored only as an argon2 hash."""

    id = fields.BigIntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    password_hash = fields.CharField(max_length=255)
    # Space-separated scopes, as in OAuth 2.0 (e.g. "items:read items:write").
    scopes = fields.CharField(max_length=500, default="")
    is_active = fields.BooleanField(default=True)
    # Access tokens carry the version they were issued at; a trigger bumps it (and stamps
    # tokens_changed_at) when the user is disabled, their scopes or password change, or their
    # tokens are revoked. Workers poll the recently stamped users (app/auth/token_cache.py).
    token_version = fields.IntField(default=0)
    tokens_changed_at = fields.DatetimeField(null=True, db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    refresh_tokens: fields.ReverseRelation[RefreshToken]

    class Meta:
        table = "users"


class RefreshToken(Model):
    """A refresh token, stored as its SHA-256 so a database leak does not leak tokens.

    Each use replaces it with a new token of the same `family` (one family per login) and
    marks it used; a used token presented again revokes its whole family.
    """

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    family = fields.UUIDField(db_index=True)
    used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "refresh_tokens"
