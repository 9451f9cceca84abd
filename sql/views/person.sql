-- person (internal, never exposed): one row per person in the population at A, with
-- the run's tier and risk, the banded dimensions commissioners filter on instead of
-- exact values, and the person's two record keys for the cell key method
-- (`cell_record_key`, `cell_magnitude_key`: keyed by the deployment's secret, which
-- only the query service holds). The commissioner views below are built on it.
-- People recorded with a sex other than F or M (about 0.2%) are left out: any table
-- by sex would single them out, so every cut including sex would be refused.
SELECT
  f.pseudo_id,
  cell_record_key(f.pseudo_id) AS __record_key,
  cell_magnitude_key(f.pseudo_id) AS __magnitude_key,
  f.practice_code,
  f.lsoa_code,
  f.imd_decile,
  CAST((f.imd_decile + 1) / 2 AS INT) AS imd_quintile,
  age_band(f.age) AS age_band,
  f.sex,
  s.tier,
  CASE
    WHEN f.emergency_admissions_12m = 0 THEN '0'
    WHEN f.emergency_admissions_12m = 1 THEN '1'
    WHEN f.emergency_admissions_12m = 2 THEN '2'
    ELSE '3+'
  END AS emergency_admissions_band,
  -- 10 or more medicines: the NHS's "polypharmacy" threshold for structured reviews.
  CASE
    WHEN f.distinct_drugs_12m < 5 THEN '0-4'
    WHEN f.distinct_drugs_12m < 10 THEN '5-9'
    ELSE '10+'
  END AS polypharmacy_band,
  CASE
    WHEN f.ltc_groups_12m = 0 THEN '0'
    WHEN f.ltc_groups_12m = 1 THEN '1'
    WHEN f.ltc_groups_12m = 2 THEN '2'
    ELSE '3+'
  END AS ltc_band,
  CASE
    WHEN f.gp_appts_12m = 0 THEN '0'
    WHEN f.gp_appts_12m < 5 THEN '1-4'
    WHEN f.gp_appts_12m < 10 THEN '5-9'
    ELSE '10+'
  END AS gp_appts_band,
  s.risk,
  f.* EXCLUDE (pseudo_id, practice_code, lsoa_code, imd_decile, sex)
FROM features f
JOIN scores s ON s.pseudo_id = f.pseudo_id
WHERE f.sex IN ('F', 'M')
