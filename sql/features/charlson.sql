-- Charlson comorbidity index over the primary and secondary diagnoses of valid
-- spells admitted in W24 = [w24_start, as_of), at each date of feature_dates, coded
-- by Quan (2005) ICD-10 prefixes with the original Charlson weights (the table
-- charlson_codes; charlson_condition() looks a code up in it). Each condition counts
-- once; a severe form present scores its mild form 0.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
-- The 24-month windows of dates a year apart overlap (a spell can count at both), so
-- this file joins feature_dates rather than using feature_date().
-- A spell's codes, its primary diagnosis then its secondary ones (none when the list
-- is NULL), unnested from one read of the admissions: a UNION ALL of the two read
-- (and validated) the admissions once for each side.
WITH codes AS (
  SELECT d.as_of, a.person,
         unnest(array_prepend(a.primary_diagnosis, a.secondary_diagnoses)) AS code
  FROM admissions a
  JOIN feature_dates d ON a.admission_date >= d.w24_start AND a.admission_date < d.as_of
),
conditions AS (
  SELECT DISTINCT c.as_of, c.person, w.condition, w.weight
  FROM codes c
  JOIN (SELECT DISTINCT condition, weight FROM charlson_codes) w
    ON w.condition = charlson_condition(upper(replace(c.code, '.', '')))
)
-- A severe form present scores its mild form 0: one aggregate per person, no join of
-- the conditions to themselves (which read the admissions once more for each side).
SELECT
  as_of,
  person,
  sum(weight)
    - CASE WHEN bool_or(condition = 'msld')     THEN coalesce(max(weight) FILTER (WHERE condition = 'mld'), 0)  ELSE 0 END
    - CASE WHEN bool_or(condition = 'diabwc')   THEN coalesce(max(weight) FILTER (WHERE condition = 'diab'), 0) ELSE 0 END
    - CASE WHEN bool_or(condition = 'metacanc') THEN coalesce(max(weight) FILTER (WHERE condition = 'canc'), 0) ELSE 0 END
    AS charlson_score
FROM conditions
GROUP BY as_of, person
