"""Fleet threat metrics, policies, actions and their audit trail."""
