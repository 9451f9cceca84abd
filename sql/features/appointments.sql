-- GP appointment features over W12 = [w12_start, as_of), at each date of
-- feature_dates in one pass over appointments.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
SELECT
  d.as_of,
  a.person,
  count(*) FILTER (WHERE a.appt_status = 'Attended' AND a.hcp_type = 'GP')                    AS gp_appts_12m,
  count(*) FILTER (WHERE a.appt_status = 'Attended' AND a.hcp_type = 'Other Practice staff')  AS other_appts_12m,
  count(*) FILTER (WHERE a.appt_status = 'Attended' AND a.appt_mode = 'Home Visit')           AS home_visits_12m,
  count(*) FILTER (WHERE a.appt_status = 'DNA')                                               AS dna_12m
FROM appointments a
JOIN feature_dates d ON a.appointment_date >= d.w12_start AND a.appointment_date < d.as_of
GROUP BY d.as_of, a.person
