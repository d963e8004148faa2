"""Idempotency keys: the first response to a keyed `POST /items`, kept for retries."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class IdempotencyKey(Model):
    """One caller's use of one `Idempotency-Key`; `status` is null until a response is stored."""

    id = fields.BigIntField(primary_key=True)
    # Who sent it: "sub:<token subject>" or "ip:<client address>".
    scope = fields.CharField(max_length=200)
    key = fields.CharField(max_length=255)
    # SHA-256 (hex) of method, path and canonical JSON body.
    fingerprint = fields.CharField(max_length=64)
    status = fields.SmallIntField(null=True)
    headers: fields.JSONField[dict[str, str]] = fields.JSONField(null=True)
    body = fields.BinaryField(null=True)
    item_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()

    class Meta:
        table = "idempotency_keys"
        unique_together = (("scope", "key"),)
        indexes = (Index(fields=("expires_at",), name="idempotency_keys_expires_at_idx"),)
