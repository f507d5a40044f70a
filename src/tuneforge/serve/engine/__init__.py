"""Generation engine behind the HTTP layer."""
