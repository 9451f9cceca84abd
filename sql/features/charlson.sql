-- Charlson comorbidity index over the primary and secondary diagnoses of valid
-- spells admitted in W24 = [$w24_start, $as_of), coded by Quan (2005) ICD-10
-- prefixes (charlson_codes) with the original Charlson weights. Each condition
-- counts once; a severe form present scores its mild form 0.
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
distinct_codes AS (
  SELECT DISTINCT pseudo_id, upper(replace(code, '.', '')) AS code
  FROM codes
  WHERE code IS NOT NULL
),
conditions AS (
  SELECT DISTINCT c.pseudo_id, r.condition, r.weight
  FROM distinct_codes c
  CROSS JOIN (SELECT DISTINCT length(icd10_prefix) AS len FROM charlson_codes) l
  JOIN charlson_codes r ON substr(c.code, 1, l.len) = r.icd10_prefix
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
