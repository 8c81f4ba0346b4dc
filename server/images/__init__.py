"""Checks on images uploaded with authorization requests."""
