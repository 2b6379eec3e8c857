"""How and when runs happen: the executor, jobs, schedules, sensors and alerts."""
