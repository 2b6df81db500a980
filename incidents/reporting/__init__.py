"""Regulatory reporting: Forms 03 and 04 per incident, the periodic Form 05, and their DOCX and PDF rendering."""
