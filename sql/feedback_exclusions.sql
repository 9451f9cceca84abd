-- People a care team marked `declined` or `not_appropriate` in the last
-- [cohorts] feedback_exclusion_months (default 12) before $as_of: they are taken
-- out of every cohort, so that support stops where it is not wanted.
SELECT DISTINCT pseudo_id
FROM feedback
WHERE outcome IN ('declined', 'not_appropriate')
  AND recorded_date > $feedback_since
  AND recorded_date <= $as_of
