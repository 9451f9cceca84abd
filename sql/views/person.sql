-- person (internal, never exposed): one row per person in the population at A, with
-- the run's tier and risk. The commissioner views below are built on it.
SELECT
  f.pseudo_id,
  f.practice_code,
  f.lsoa_code,
  f.imd_decile,
  CAST((f.imd_decile + 1) / 2 AS INT) AS imd_quintile,
  age_band(f.age) AS age_band,
  f.sex,
  s.tier,
  s.risk,
  f.* EXCLUDE (pseudo_id, practice_code, lsoa_code, imd_decile, sex)
FROM features f
JOIN scores s ON s.pseudo_id = f.pseudo_id
