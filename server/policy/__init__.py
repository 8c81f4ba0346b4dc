"""Authorization policy: business types and modes (R2, R3), thresholds per region,
operating hours (R9) and branch enrollment (R10), read from one reloadable TOML file."""
