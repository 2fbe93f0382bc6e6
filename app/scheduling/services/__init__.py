"""Business rules of the scheduling primitive, one module per resource.

* :mod:`.cues` — create / list / get / update / delete / fire cues (wire §7).
* :mod:`.executions` — list, claim, heartbeat, outcome, replay (wire §8).
* :mod:`.verification` — verify, verification-pending, evidence (wire §8.10).
* :mod:`.workers` — pull-worker heartbeats and listing (wire §9).
* :mod:`.lookup` — ownership-checked fetches shared by the others.

Every function takes the acting ``User`` explicitly and, where time matters, ``now`` (defaulting
to the real clock) so tests control time without sleeping.  They raise ``AppError`` and commit
their own transaction.
"""
