"""How the graph runs itself: the executor, event-driven chaining, the daily schedule, retries, alerts, freshness."""
