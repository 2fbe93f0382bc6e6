"""Messaging business rules, one module per area: ``agents``, ``messages`` (send, read, ack),
``inbox`` (inbox and sent views), ``delivery`` (push worker jobs) and ``retention``."""
