"""The scheduling primitive: cues, executions, workers, and the scheduler/delivery jobs."""
