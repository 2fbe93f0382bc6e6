"""The event-emit primitive (wire §11.1, §13.4): the event registry, emission in the sender's
transaction, subscriptions, pull with long poll, webhook dispatch and digests.

Messaging emits through :mod:`app.events.emission` (its public functions); this package never
imports messaging internals.  It resolves ``{ref}`` with messaging's public
``resolve_owned_agent`` like every other route under ``/v1/agents``.
"""
