"""keywatch's deciding side: rules, alert states, notifications and responses."""
