"""Routes of live sessions and IPC attachments: one blueprint (and one MODULES entry) each."""
