"""Retries for transient failures: the same policy on ingestion and activation steps.

A step that failed on something that heals (a dropped connection to S3 or the CRM after the HTTP-level retries
gave up, a warehouse lock held a moment too long) is retried up to three times, 10 s, ~20 s, ~40 s later
(exponential, with +/- jitter so steps that failed together do not retry together). Failures that cannot heal by
waiting — a file that breaks its contract, a sync gate's refusal, no landing file for the day — raise
`dg.Failure(allow_retries=False)` and fail at once, so the alert goes out without a minute of pointless retries.

dbt is retried differently: the retry of a failed `dbt build` step runs `dbt retry` against the artifacts the
failed attempt left, i.e. only the nodes that failed or were skipped (see `transformation.assets`).
"""

import dagster as dg

TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
