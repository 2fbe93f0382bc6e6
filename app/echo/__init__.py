"""Echo: a short-lived mailbox a cue can deliver to, polled by ``cueapi quickstart`` (§12.5)."""
