"""Tests of delegation beyond the env token: principals, owners, scopes, lifecycle, audit."""
