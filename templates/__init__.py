"""The report's Jinja templates, stylesheet and page script; installed as the data package report.templates."""
