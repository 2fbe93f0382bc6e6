"""One-way imports from other systems into Cueline (``flask import-cueapi`` first).

Layout:

``engine``     the reconciliation of imported rows with Cueline's tables, through the import
               ledger (idempotent re-runs, conflicts reported per row, batched writes)
``targets``    Cueline's tables as an import writes them: keys, columns, unique keys
``report``     counts, per-row notes and the summary an import prints
``progress``   progress per table (a bar on a terminal, periodic lines otherwise)
``cueapi``     the cueapi-core PostgreSQL source: reading it and mapping its values
``cli``        the ``import-cueapi`` command

An import never writes to its source, and writes Cueline's tables with plain Core statements
(no ORM objects are kept), so its memory does not grow with the number of rows.
"""
