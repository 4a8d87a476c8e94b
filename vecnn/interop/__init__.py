"""Bridges to other frameworks (imported on use: the core needs none of them)."""
