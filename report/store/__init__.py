"""The results store: run folders on disk, the results format, schemas, units, reading runs back."""
