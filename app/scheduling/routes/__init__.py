"""HTTP surface of the scheduling primitive: one blueprint per resource (cues, executions,
workers), each a ``MODULES`` entry removed by ``DISABLE_CUE_PRIMITIVE``."""
