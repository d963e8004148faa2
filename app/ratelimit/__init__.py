"""Rate limiting: one fixed-window count per client, shared by every worker and machine.

Windows are aligned to the epoch (`floor(now / period)`), so a count needs one number per
client and the reset time is known without asking anyone. Counts live in

- a table in shared memory (`app.ratelimit.window_table`), made in the main process before workers
  spawn and reached through `app.shared_ctx` (O(1) per request): one limit per machine; or
- Redis when `REDIS_URL` is set, through the `limits` library's async storage (one
  INCR-and-EXPIRE script, one round trip): one limit for every machine. While Redis does
  not answer, the machine's own table takes over, so limits stay per machine rather than off.

`RATE_LIMIT=off` registers nothing at all: no middleware, no cost.
"""
