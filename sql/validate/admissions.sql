-- Row rules for admissions (hospital spells; see validate/patients.sql for the shape).
-- A duplicated spell_id keeps no copy: every copy is quarantined.
-- spell_cost may be null; when present it is finite and not negative.
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
    WHEN a.spell_id IS NULL                     THEN 'null_spell_id'
    WHEN d.copies > 1                           THEN 'duplicate_spell_id'
    WHEN a.admission_date IS NULL               THEN 'null_date'
    WHEN a.admission_date < DATE '1900-01-01'   THEN 'date_before_1900'
    WHEN m.code IS NULL                         THEN 'invalid_admission_method'
    WHEN a.discharge_date < a.admission_date    THEN 'discharge_before_admission'
    WHEN isnan(a.spell_cost) OR NOT (a.spell_cost BETWEEN 0 AND 1.7976931348623157e308)
                                                THEN 'invalid_spell_cost'
    ELSE NULL
  END AS reason
FROM input_admissions a
LEFT JOIN (SELECT pseudo_id, person FROM patients) p ON a.pseudo_id = p.pseudo_id
LEFT JOIN (
  SELECT spell_id, count(*) AS copies FROM input_admissions GROUP BY spell_id
) d ON a.spell_id = d.spell_id
LEFT JOIN admission_methods m ON a.admission_method = m.code
