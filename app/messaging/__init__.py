"""The messaging primitive: agents, messages, inbox polling, push delivery, authorization."""
