"""Integrator example: a Flask app whose users act in Cueline through delegation."""
