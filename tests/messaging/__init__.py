"""Tests of the messaging primitive."""
