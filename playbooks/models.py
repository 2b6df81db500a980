"""Typed SQLAlchemy 2 models of the directory and the playbook engine."""
