-- Row rules for patients. Every row gets the first rule it breaks as `reason`,
-- or NULL when it is valid. Reads input_patients: opt-outs are already removed.
-- Duplicated pseudo_ids keep no copy: every copy is quarantined.
-- Impossible values (born after A or before 1900, registered or dead before the year
-- of birth, a deprivation decile outside 1..10) are quarantined, not used.
SELECT
  p.*,
  CASE
    WHEN p.pseudo_id IS NULL                      THEN 'null_pseudo_id'
    WHEN NOT is_pseudo_id(p.pseudo_id)            THEN 'malformed_pseudo_id'
    WHEN d.copies > 1                             THEN 'duplicate_pseudo_id'
    WHEN p.year_of_birth IS NULL                  THEN 'null_year_of_birth'
    WHEN p.year_of_birth > $as_of_year            THEN 'year_of_birth_after_as_of'
    WHEN p.year_of_birth < 1900                   THEN 'year_of_birth_before_1900'
    WHEN p.sex IS NULL OR p.sex NOT IN ('F', 'M', 'U') THEN 'invalid_sex'
    WHEN p.practice_code IS NULL                  THEN 'null_practice_code'
    WHEN p.registration_start IS NULL             THEN 'null_registration_start'
    WHEN p.registration_start < DATE '1900-01-01' THEN 'date_before_1900'
    WHEN p.registration_end < p.registration_start THEN 'registration_end_before_start'
    WHEN date_part('year', p.registration_start) < p.year_of_birth THEN 'registration_before_birth'
    WHEN date_part('year', p.date_of_death) < p.year_of_birth THEN 'death_before_birth'
    WHEN p.imd_decile NOT BETWEEN 1 AND 10        THEN 'invalid_imd_decile'
    ELSE NULL
  END AS reason
FROM input_patients p
LEFT JOIN (
  SELECT pseudo_id, count(*) AS copies FROM input_patients GROUP BY pseudo_id
) d ON p.pseudo_id = d.pseudo_id
