-- Entrants and leavers of one cohort since the job's previous complete run (the one
-- with the latest as_of not after this run's; `changes_<cohort>.parquet`).
--
--   cohort(pseudo_id, ...)           this run's cohort file
--   previous_cohort(pseudo_id, ...)  the previous run's file of the same cohort
--   previous_scores(pseudo_id, tier) the previous run's scores
--   scores, patients                 this run's (patients: valid, opt-outs removed)
--
-- Only people in this run's patients are listed: someone who has opted out since the
-- previous run is in no table of this run, and so in no change list (their rows in the
-- previous run's files are never joined to anything that is written). practice_code is
-- the person's practice in this extract, the practice a care team acts for.
WITH now_in AS (SELECT DISTINCT pseudo_id FROM cohort),
before_in AS (SELECT DISTINCT pseudo_id FROM previous_cohort),
both_runs AS (
  SELECT
    coalesce(n.pseudo_id, b.pseudo_id) AS pseudo_id,
    CASE
      WHEN b.pseudo_id IS NULL THEN 'entered'
      WHEN n.pseudo_id IS NULL THEN 'left'
      ELSE 'stayed'
    END AS change
  FROM now_in n
  FULL OUTER JOIN before_in b ON n.pseudo_id = b.pseudo_id
)
SELECT
  x.pseudo_id,
  x.change,
  ps.tier AS previous_tier,
  s.tier AS current_tier,
  p.practice_code
FROM both_runs x
JOIN patients p ON p.pseudo_id = x.pseudo_id
LEFT JOIN previous_scores ps ON ps.pseudo_id = x.pseudo_id
LEFT JOIN scores s ON s.pseudo_id = x.pseudo_id
