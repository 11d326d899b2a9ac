"""One module per scenario of the issue; each ``run(env, plan)`` returns its table rows."""
