"""The publishing side: saved results into pages (HTML site, single file, PDF), no model loaded."""
