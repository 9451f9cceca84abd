-- GP appointment features over W12 = [as_of - 365, as_of), at each date of
-- feature_dates in one pass over appointments: feature_days lists each date's days
-- (in_w12: in its 12-month window), so an event joins the dates whose window holds it.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
SELECT
  d.as_of,
  a.person,
  count(*) FILTER (WHERE a.appt_status = 'Attended' AND a.hcp_type = 'GP')                    AS gp_appts_12m,
  count(*) FILTER (WHERE a.appt_status = 'Attended' AND a.hcp_type = 'Other Practice staff')  AS other_appts_12m,
  count(*) FILTER (WHERE a.appt_status = 'Attended' AND a.appt_mode = 'Home Visit')           AS home_visits_12m,
  count(*) FILTER (WHERE a.appt_status = 'DNA')                                               AS dna_12m
FROM appointments a
JOIN feature_days d ON a.appointment_date = d.day AND d.in_w12
GROUP BY d.as_of, a.person
