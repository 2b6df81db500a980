"""Playbooks: who to page, definitions as data, and the runs, pages and deliveries that carry them out."""
