-- Appointments of each index episode in the year before its index date, moved
-- forward by shift_days (see shifted_patients.sql).
SELECT
  CAST(e.episode AS VARCHAR) AS pseudo_id,
  e.episode AS person,
  CAST(CAST(a.appointment_date AS INT) + e.shift_days AS DATE) AS appointment_date,
  a.hcp_type,
  a.appt_mode,
  a.appt_status
FROM appointments a
JOIN index_episodes e ON e.person = a.person
WHERE a.appointment_date >= e.year_start
  AND a.appointment_date < e.index_date
