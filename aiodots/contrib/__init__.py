"""Optional integrations, each behind its own extra (`pip install 'aiodots[redis]'`)."""
