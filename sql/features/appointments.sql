-- GP appointment features over W12 = [w12_start, as_of), at each date of
-- feature_dates in one pass over appointments: feature_date() gives each row the
-- date whose 12-month window holds it (the dates' windows do not overlap), or NULL.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
WITH dated AS (
  SELECT feature_date(a.appointment_date, $feature_dates, 365) AS as_of,
         a.person, a.appt_status, a.hcp_type, a.appt_mode
  FROM appointments a
)
SELECT
  as_of,
  person,
  count(*) FILTER (WHERE appt_status = 'Attended' AND hcp_type = 'GP')                    AS gp_appts_12m,
  count(*) FILTER (WHERE appt_status = 'Attended' AND hcp_type = 'Other Practice staff')  AS other_appts_12m,
  count(*) FILTER (WHERE appt_status = 'Attended' AND appt_mode = 'Home Visit')           AS home_visits_12m,
  count(*) FILTER (WHERE appt_status = 'DNA')                                             AS dna_12m
FROM dated
WHERE as_of IS NOT NULL
GROUP BY as_of, person
