"""The store: the only place that speaks SQL (registry, messages, rejections, routes, outbox, tokens, audit)."""
