"""Tasks: accepting submissions, running attempts on workers, releasing delayed work."""
