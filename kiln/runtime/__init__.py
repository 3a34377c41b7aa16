"""Runtime: load .kiln files and run them (numpy + the native loader only)."""
