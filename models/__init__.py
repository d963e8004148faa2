"""Tortoise models, one module per aggregate."""

from __future__ import annotations

from models.idempotency import IdempotencyKey
from models.item import Item
from models.user import RefreshToken, User

__all__ = ["IdempotencyKey", "Item", "RefreshToken", "User"]
