-- Row rules for appointments (see validate/patients.sql for the shape).
-- `patients` here is the valid patients: an event of anyone else is an orphan.
-- person: the patient's integer key in this run, which the feature SQL groups on; its
-- absence marks an unknown patient (every patient has one), so the join need not
-- carry the patient's 32-character pseudo_id onto every event row.
-- A row that found its patient has that patient's well-formed pseudo_id, so the
-- pseudo_id's shape is tested only on the rows that did not (the first rules' order
-- is kept: null, then malformed, then unknown).
SELECT
  a.*,
  p.person,
  CASE
    WHEN p.person IS NULL THEN CASE
      WHEN a.pseudo_id IS NULL               THEN 'null_pseudo_id'
      WHEN NOT is_pseudo_id(a.pseudo_id)     THEN 'malformed_pseudo_id'
      ELSE 'unknown_pseudo_id'
    END
    WHEN a.appointment_date IS NULL             THEN 'null_date'
    WHEN a.appointment_date < DATE '1900-01-01' THEN 'date_before_1900'
    ELSE NULL
  END AS reason
FROM input_appointments a
LEFT JOIN (SELECT pseudo_id, person FROM patients) p ON a.pseudo_id = p.pseudo_id
