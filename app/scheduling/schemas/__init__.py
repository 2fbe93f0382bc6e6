"""Request and response schemas of cues, executions and workers (wire §7–§9).

Request schemas check shapes and types only; rules whose wire errors are not ``422
validation_error`` (unknown time zone, bad schedule, SSRF, payload size) live in the services so
they run in the spec's validation order.  Response schemas dump the plain dicts built by
``app.scheduling.presenters``.

One module per resource: :mod:`.cues` (and the execution object cues embed),
:mod:`.executions`, :mod:`.workers`; shared field types in :mod:`.fields`.
"""
