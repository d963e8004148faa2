"""Tortoise models, one module per aggregate."""

from __future__ import annotations

from models.item import Item

__all__ = ["Item"]
