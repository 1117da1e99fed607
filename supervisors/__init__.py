"""Supervision trees for wasmhive actors (OTP strategies, pools, breaker, retry).

Not built yet: until then a deployment replaces a crashed actor with a fresh
instance for the next message (see :class:`wasmhive.runtime.deployment.Deployment`).
"""

__all__: list[str] = []
