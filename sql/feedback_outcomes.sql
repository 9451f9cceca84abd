-- Care teams' recorded outcomes up to $as_of: one row per team, outcome, service and
-- person (the run folder's feedback_people.parquet), behind the commissioner view
-- feedback_outcomes, which counts them through disclosure control.
SELECT DISTINCT team, outcome, service_code, pseudo_id
FROM feedback
WHERE recorded_date <= $as_of
