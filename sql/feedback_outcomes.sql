-- Care teams' recorded outcomes up to $as_of, as people by team, outcome and service:
-- the run folder's feedback_outcomes.parquet, behind the commissioner view of the
-- same name (disclosure control applies there).
SELECT team, outcome, service_code, count(DISTINCT pseudo_id) AS people
FROM feedback
WHERE recorded_date <= $as_of
GROUP BY team, outcome, service_code
