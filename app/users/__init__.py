"""Users: the account record, registration, and the internal upsert used by integrators."""
