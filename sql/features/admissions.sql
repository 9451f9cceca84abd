-- Hospital spell features over W12 = [w12_start, as_of), from valid spells only, at
-- each date of feature_dates in one pass over admissions.
-- Bed days of a spell still open at as_of run to as_of.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
SELECT
  d.as_of,
  a.person,
  count(*) FILTER (WHERE m.category = 'emergency')                                AS emergency_admissions_12m,
  sum(coalesce(a.discharge_date, d.as_of) - a.admission_date) FILTER (WHERE m.category = 'emergency')
                                                                                  AS emergency_bed_days_12m,
  count(*) FILTER (WHERE m.category = 'elective')                                 AS elective_admissions_12m,
  sum(a.spell_cost)                                                               AS admission_cost_12m
FROM admissions a
JOIN feature_dates d ON a.admission_date >= d.w12_start AND a.admission_date < d.as_of
JOIN admission_methods m ON a.admission_method = m.code
GROUP BY d.as_of, a.person
