"""Tests of the scheduling primitive and the shared outbound helpers."""
