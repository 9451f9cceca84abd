-- Row rules for patients. Every row gets the first rule it breaks as `reason`,
-- or NULL when it is valid. Reads input_patients: opt-outs are already removed.
-- Duplicated pseudo_ids keep no copy: every copy is quarantined.
SELECT
  p.*,
  CASE
    WHEN p.pseudo_id IS NULL                      THEN 'null_pseudo_id'
    WHEN NOT is_pseudo_id(p.pseudo_id)            THEN 'malformed_pseudo_id'
    WHEN d.copies > 1                             THEN 'duplicate_pseudo_id'
    WHEN p.year_of_birth IS NULL                  THEN 'null_year_of_birth'
    WHEN p.sex IS NULL OR p.sex NOT IN ('F', 'M', 'U') THEN 'invalid_sex'
    WHEN p.practice_code IS NULL                  THEN 'null_practice_code'
    WHEN p.registration_start IS NULL             THEN 'null_registration_start'
    WHEN p.registration_start < DATE '1900-01-01' THEN 'date_before_1900'
    WHEN p.registration_end < p.registration_start THEN 'registration_end_before_start'
    ELSE NULL
  END AS reason
FROM input_patients p
LEFT JOIN (
  SELECT pseudo_id, count(*) AS copies FROM input_patients GROUP BY pseudo_id
) d ON p.pseudo_id = d.pseudo_id
