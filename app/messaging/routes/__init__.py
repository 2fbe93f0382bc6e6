"""HTTP surface of the messaging primitive: ``agents`` (/v1/agents…) and ``messages``
(/v1/messages…), each a blueprint listed in ``app.MODULES``."""
