-- feedback_outcomes: care teams' outcomes recorded up to A, by team, outcome and
-- service (run folder file feedback_outcomes.parquet). Pre-aggregated.
SELECT team, outcome, service_code, people FROM feedback_outcomes_table
