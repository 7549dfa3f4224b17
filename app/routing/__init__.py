"""Public model ids to upstream targets: the routes table (catalog) and the per-process routes
cache the hot path reads (routes)."""
