-- cohort_summary: people and mean risk by cohort, practice, LSOA, IMD decile, age
-- band, sex and tier. Pre-aggregated: rows of 1-7 people come out suppressed.
SELECT
  cohort,
  practice_code,
  lsoa_code,
  imd_decile,
  age_band,
  sex,
  tier,
  count(*) AS people,
  avg(risk) AS mean_risk
FROM cohort_people
GROUP BY cohort, practice_code, lsoa_code, imd_decile, age_band, sex, tier
