"""Negative control of the claim-time pause check, loaded by the workers of the pause tests.

With ``PAUSE_CLAIM_NEGATIVE_CONTROL=1`` in the worker's environment the claim is prepared
without ``PAUSE_GUARD``: the tests that say a paused task is never claimed must then fail.
"""

from __future__ import annotations

import os
from dataclasses import replace

from scheduler_app.services.ledger import transitions

if os.environ.get("PAUSE_CLAIM_NEGATIVE_CONTROL") == "1":
    transitions.CLAIM_MOVE = replace(
        transitions.CLAIM_MOVE,
        guards=tuple(g for g in transitions.CLAIM_MOVE.guards if g != transitions.PAUSE_GUARD),
    )
    transitions._prepared = None
