-- Charlson comorbidity index over the primary and secondary diagnoses of valid
-- spells admitted in W24 = [$w24_start, $as_of), coded by Quan (2005) ICD-10
-- prefixes with the original Charlson weights (the table charlson_codes;
-- charlson_condition() looks a code up in it). Each condition counts once; a severe
-- form present scores its mild form 0.
WITH spells AS (
  SELECT pseudo_id, primary_diagnosis, secondary_diagnoses
  FROM admissions
  WHERE admission_date >= $w24_start AND admission_date < $as_of
),
codes AS (
  SELECT pseudo_id, primary_diagnosis AS code FROM spells
  UNION ALL
  SELECT pseudo_id, unnest(secondary_diagnoses) AS code FROM spells
),
conditions AS (
  SELECT DISTINCT c.pseudo_id, w.condition, w.weight
  FROM codes c
  JOIN (SELECT DISTINCT condition, weight FROM charlson_codes) w
    ON w.condition = charlson_condition(upper(replace(c.code, '.', '')))
),
hierarchy AS (
  SELECT column1 AS severe, column2 AS mild
  FROM (VALUES ('msld', 'mld'), ('diabwc', 'diab'), ('metacanc', 'canc'))
)
SELECT
  c.pseudo_id,
  sum(CASE WHEN s.pseudo_id IS NULL THEN c.weight ELSE 0 END) AS charlson_score
FROM conditions c
LEFT JOIN hierarchy h ON h.mild = c.condition
LEFT JOIN conditions s ON s.pseudo_id = c.pseudo_id AND s.condition = h.severe
GROUP BY c.pseudo_id
