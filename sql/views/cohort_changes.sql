-- cohort_changes: people who entered, left or stayed in each cohort since the job's
-- previous run (the run folder's changes_<cohort>.parquet), by practice and tier in
-- the two runs ('none' where a person was not scored). Pre-aggregated: rows of fewer
-- than 8 people are left out and counts are perturbed by their cell key and rounded,
-- so the one person who entered a practice's list this month is not shown. Empty for
-- a job's first run.
SELECT
  cohort,
  change,
  practice_code,
  coalesce(previous_tier, 'none') AS previous_tier,
  coalesce(current_tier, 'none') AS current_tier,
  count(*) AS people,
  sum(cell_record_key(pseudo_id)) AS __people_key
FROM cohort_change_rows
GROUP BY cohort, change, practice_code, coalesce(previous_tier, 'none'), coalesce(current_tier, 'none')
