"""Tests of the one-way importers (``flask import-cueapi``)."""
