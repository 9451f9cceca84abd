-- cohort_summary: people and mean risk by cohort, practice and tier. Pre-aggregated
-- at a grain that does not single people out (no LSOA, age or sex: those combined
-- are nearly unique); rows of fewer than 8 people are left out, counts are perturbed
-- by their cell key and rounded, and mean_risk is the protected sum of risk over the
-- protected count. The __ columns are what protection needs and are never shown.
SELECT
  cohort,
  practice_code,
  tier,
  count(*) AS people,
  avg(risk) AS mean_risk,
  sum(__record_key) AS __people_key,
  sum(risk) AS __risk_sum,
  max(abs(risk)) AS __risk_top,
  sum(__magnitude_key) AS __risk_key
FROM cohort_people
GROUP BY cohort, practice_code, tier
