-- GP appointment features over W12 = [$w12_start, $as_of).
SELECT
  pseudo_id,
  count(*) FILTER (WHERE appt_status = 'Attended' AND hcp_type = 'GP')                    AS gp_appts_12m,
  count(*) FILTER (WHERE appt_status = 'Attended' AND hcp_type = 'Other Practice staff')  AS other_appts_12m,
  count(*) FILTER (WHERE appt_status = 'Attended' AND appt_mode = 'Home Visit')           AS home_visits_12m,
  count(*) FILTER (WHERE appt_status = 'DNA')                                             AS dna_12m
FROM appointments
WHERE appointment_date >= $w12_start AND appointment_date < $as_of
GROUP BY pseudo_id
