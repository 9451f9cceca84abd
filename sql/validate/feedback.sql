-- Row rules for care teams' feedback (see validate/patients.sql for the shape).
SELECT
  f.*,
  CASE
    WHEN f.pseudo_id IS NULL                  THEN 'null_pseudo_id'
    WHEN NOT is_pseudo_id(f.pseudo_id)        THEN 'malformed_pseudo_id'
    WHEN p.pseudo_id IS NULL                  THEN 'unknown_pseudo_id'
    WHEN f.recorded_date IS NULL              THEN 'null_date'
    WHEN f.outcome IS NULL OR f.outcome NOT IN
      ('reviewed', 'enrolled', 'declined', 'not_appropriate', 'deceased', 'moved_away')
                                              THEN 'invalid_outcome'
    -- A service code is a code (`feedback import` takes up to 8 letters and digits),
    -- never room for text that commissioners would see in feedback_outcomes.
    WHEN (f.outcome = 'enrolled') <> (f.service_code IS NOT NULL)
      OR NOT regexp_like(coalesce(f.service_code, 'X'), '^[A-Z0-9]{1,8}$')
                                              THEN 'invalid_service_code'
    ELSE NULL
  END AS reason
FROM input_feedback f
LEFT JOIN (SELECT pseudo_id FROM patients) p ON f.pseudo_id = p.pseudo_id
