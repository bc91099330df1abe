"""Methods several analyses share, built on the intervention engine (not analyses: nothing here is registered)."""
