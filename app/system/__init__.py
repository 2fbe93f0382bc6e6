"""Service-level endpoints: health, status, and what this deployment offers."""
