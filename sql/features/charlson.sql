-- Charlson comorbidity index over the primary and secondary diagnoses of valid
-- spells admitted in W24 = [w24_start, as_of), at each date of feature_dates, coded
-- by Quan (2005) ICD-10 prefixes with the original Charlson weights (the table
-- charlson_codes; charlson_condition() looks a code up in it). Each condition counts
-- once; a severe form present scores its mild form 0.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
WITH spells AS (
  SELECT d.as_of, a.person, a.primary_diagnosis, a.secondary_diagnoses
  FROM admissions a
  JOIN feature_dates d ON a.admission_date >= d.w24_start AND a.admission_date < d.as_of
),
codes AS (
  SELECT as_of, person, primary_diagnosis AS code FROM spells
  UNION ALL
  SELECT as_of, person, unnest(secondary_diagnoses) AS code FROM spells
),
conditions AS (
  SELECT DISTINCT c.as_of, c.person, w.condition, w.weight
  FROM codes c
  JOIN (SELECT DISTINCT condition, weight FROM charlson_codes) w
    ON w.condition = charlson_condition(upper(replace(c.code, '.', '')))
),
hierarchy AS (
  SELECT column1 AS severe, column2 AS mild
  FROM (VALUES ('msld', 'mld'), ('diabwc', 'diab'), ('metacanc', 'canc'))
)
SELECT
  c.as_of,
  c.person,
  sum(CASE WHEN s.person IS NULL THEN c.weight ELSE 0 END) AS charlson_score
FROM conditions c
LEFT JOIN hierarchy h ON h.mild = c.condition
LEFT JOIN conditions s
  ON s.as_of = c.as_of AND s.person = c.person AND s.condition = h.severe
GROUP BY c.as_of, c.person
