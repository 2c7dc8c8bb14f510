"""consentkit: per-channel contact consent for messaging apps."""
