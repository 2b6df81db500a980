"""Playbooks: the directory of who to page, playbook definitions as data, and the engine that runs them."""
