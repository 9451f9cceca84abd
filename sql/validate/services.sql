-- Row rules for service enrolments (see validate/patients.sql for the shape).
SELECT
  s.*,
  CASE
    WHEN s.pseudo_id IS NULL               THEN 'null_pseudo_id'
    WHEN NOT is_pseudo_id(s.pseudo_id)     THEN 'malformed_pseudo_id'
    WHEN p.pseudo_id IS NULL               THEN 'unknown_pseudo_id'
    WHEN s.service_code IS NULL            THEN 'null_service_code'
    WHEN s.start_date IS NULL              THEN 'null_date'
    WHEN s.start_date < DATE '1900-01-01'  THEN 'date_before_1900'
    WHEN s.end_date < s.start_date         THEN 'end_before_start'
    ELSE NULL
  END AS reason
FROM input_services s
LEFT JOIN (SELECT pseudo_id FROM patients) p ON s.pseudo_id = p.pseudo_id
