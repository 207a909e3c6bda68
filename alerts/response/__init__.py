"""Response: the guarded quarantine, its playbook, and external leak reports."""
