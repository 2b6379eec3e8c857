"""Browser end-to-end tests: `dagster dev` on a temporary environment, driven through its UI with Chromium."""
