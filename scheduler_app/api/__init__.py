"""HTTP edge: schemas and views. Views parse, call one service, and return what a schema dumps."""
