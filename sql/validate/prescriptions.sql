-- Row rules for prescriptions (see validate/patients.sql for the shape).
-- person: the patient's integer key in this run, which the feature SQL groups on; its
-- absence marks an unknown patient (every patient has one), so the join need not
-- carry the patient's 32-character pseudo_id onto every event row.
-- A row that found its patient has that patient's well-formed pseudo_id, so the
-- pseudo_id's shape is tested only on the rows that did not (the first rules' order
-- is kept: null, then malformed, then unknown).
-- quantity and nic may be null; when present they are finite and not negative
-- (isnan first: NaN must not depend on how comparisons order it).
SELECT
  r.*,
  p.person,
  CASE
    WHEN p.person IS NULL THEN CASE
      WHEN r.pseudo_id IS NULL               THEN 'null_pseudo_id'
      WHEN NOT is_pseudo_id(r.pseudo_id)     THEN 'malformed_pseudo_id'
      ELSE 'unknown_pseudo_id'
    END
    WHEN r.issue_date IS NULL             THEN 'null_date'
    WHEN r.issue_date < DATE '1900-01-01' THEN 'date_before_1900'
    WHEN r.bnf_code IS NULL               THEN 'null_bnf_code'
    WHEN r.items IS NULL OR r.items < 0   THEN 'invalid_items'
    WHEN isnan(r.quantity) OR NOT (r.quantity BETWEEN 0 AND 1.7976931348623157e308)
                                          THEN 'invalid_quantity'
    WHEN isnan(r.nic) OR NOT (r.nic BETWEEN 0 AND 1.7976931348623157e308)
                                          THEN 'invalid_nic'
    ELSE NULL
  END AS reason
FROM input_prescriptions r
LEFT JOIN (SELECT pseudo_id, person FROM patients) p ON r.pseudo_id = p.pseudo_id
