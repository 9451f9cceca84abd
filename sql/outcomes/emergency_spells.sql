-- Service outcome evaluation: every emergency spell with its bed days (a spell still
-- open at $as_of runs to $as_of). The one definition that histories.sql, windows.sql
-- and in_service.sql read, as the view emergency_spells while the stage runs.
SELECT
  a.pseudo_id,
  a.admission_date,
  CAST(coalesce(a.discharge_date, $as_of) - a.admission_date AS DOUBLE) AS bed_days
FROM admissions a
JOIN admission_methods m ON a.admission_method = m.code
WHERE m.category = 'emergency'
