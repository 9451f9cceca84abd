-- Hospital spell features over W12 = [w12_start, as_of), from valid spells only, at
-- each date of feature_dates in one pass over admissions.
-- Bed days of a spell still open at as_of run to as_of.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
-- feature_date() gives each spell the date whose 12-month window holds its admission
-- (the dates' windows do not overlap), or NULL: no join to feature_dates.
-- Money is summed in whole micropounds, exact in any order (see prescriptions.sql).
WITH dated AS (
  SELECT feature_date(a.admission_date, $feature_dates, 365) AS as_of, a.*
  FROM admissions a
)
SELECT
  a.as_of,
  a.person,
  count(*) FILTER (WHERE m.category = 'emergency')                                AS emergency_admissions_12m,
  sum(coalesce(a.discharge_date, a.as_of) - a.admission_date) FILTER (WHERE m.category = 'emergency')
                                                                                  AS emergency_bed_days_12m,
  count(*) FILTER (WHERE m.category = 'elective')                                 AS elective_admissions_12m,
  sum(round(a.spell_cost * 1e6)) / 1e6                                            AS admission_cost_12m
FROM dated a
JOIN admission_methods m ON a.admission_method = m.code
WHERE a.as_of IS NOT NULL
GROUP BY a.as_of, a.person
