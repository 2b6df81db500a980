"""Alerts from the SOC's own tools (SIEMs, monitors, case tools, the mailbox), filed as incidents."""
