"""Negative control of the claim-time pause check, loaded by the workers of the pause tests.

With ``PAUSE_CLAIM_NEGATIVE_CONTROL=1`` in the worker's environment the read that claims each
attempt is prepared without ``PAUSE_GUARD``: the tests that say a paused task is never claimed
must then fail.
"""

from __future__ import annotations

import os

from scheduler_app.services.ledger import transitions

if os.environ.get("PAUSE_CLAIM_NEGATIVE_CONTROL") == "1":
    transitions.PAUSE_GUARD = "true"
    transitions._prepared = None
