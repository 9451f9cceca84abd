-- Spells of each index episode admitted in the two years before its index date (the
-- Charlson window), moved forward by shift_days (see shifted_patients.sql). A spell
-- discharged after the index date keeps its discharge, as the feature at A keeps one
-- recorded before A.
SELECT
  CAST(e.episode AS VARCHAR) AS pseudo_id,
  e.episode AS person,
  a.spell_id,
  a.provider_code,
  CAST(CAST(a.admission_date AS INT) + e.shift_days AS DATE) AS admission_date,
  CAST(CAST(a.discharge_date AS INT) + e.shift_days AS DATE) AS discharge_date,
  a.admission_method,
  a.primary_diagnosis,
  a.secondary_diagnoses,
  a.spell_cost
FROM admissions a
JOIN index_episodes e ON e.person = a.person
WHERE a.admission_date >= e.two_years_start
  AND a.admission_date < e.index_date
