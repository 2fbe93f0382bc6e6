"""Live sessions and IPC attachments of agents (wire §11.2, §11.3).

A *live session* is one labelled, attached session of an agent (a local monitor, an editor
session …) bound to the cue that fires at it.  An *IPC attachment* is the same row seen from a
local daemon that delivers those fires over inter-process communication instead of polling:
the daemon attaches a label, reconciles its whole view on start-up, and detaches.  Firing a cue
whose session is on the ``ipc`` transport stamps the execution ``delivery_mode_requested:
"ipc"`` (§7.8).
"""
