"""The cueapi-core source: ``source`` reads its PostgreSQL database (one read-only snapshot,
server-side cursors), ``mapping`` turns its rows into Cueline's, ``runner`` orders the tables
and checks every row's parents before it is written."""
