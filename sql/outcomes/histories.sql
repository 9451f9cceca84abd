-- Service outcome evaluation, step 2: what matching needs to know of every patient
-- who could be in the evaluation (registered at some time in the two years before
-- $as_of): sex, year of birth, registration, death, their first enrolment in any
-- service (comparison patients must not be enrolled yet), and their emergency spells
-- admitted from a year before the window, so that use in the 90 and 365 days before
-- any start date can be counted. Bed days as in the features (an open spell runs to
-- $as_of). Opted-out patients are in no table here. The two lists are in the same
-- order, which need not be by date (an ordered array_agg is several times slower here).
WITH emergency AS (
  SELECT pseudo_id, admission_date, bed_days
  FROM emergency_spells
  WHERE admission_date >= $w24_start - INTERVAL '365 days'
    AND admission_date < $as_of
),
spells AS (
  SELECT
    pseudo_id,
    array_agg(admission_date) AS admitted,
    array_agg(bed_days) AS bed_days
  FROM emergency
  GROUP BY pseudo_id
),
enrolled AS (
  SELECT pseudo_id, min(start_date) AS first_enrolment
  FROM services
  GROUP BY pseudo_id
)
SELECT
  p.pseudo_id,
  p.person,
  p.sex,
  p.year_of_birth,
  p.registration_start,
  p.registration_end,
  p.date_of_death,
  e.first_enrolment,
  s.admitted,
  s.bed_days
FROM patients p
LEFT JOIN enrolled e ON e.pseudo_id = p.pseudo_id
LEFT JOIN spells s ON s.pseudo_id = p.pseudo_id
WHERE p.registration_start < $as_of
  AND (p.registration_end IS NULL OR p.registration_end >= $w24_start)
  AND (p.date_of_death IS NULL OR p.date_of_death >= $w24_start)
ORDER BY p.pseudo_id
