-- Service outcome evaluation, step 6: for every matched episode, the emergency
-- admissions (and their bed days) of its follow-up year that fell while the person
-- was enrolled in each service (one row per episode and service with any). Comparison
-- patients may be enrolled later in the evaluated service or in another (risk-set
-- matching keeps them); the switching adjustment of the DiD needs their admissions
-- in every service, as well as the enrolled patients'.
--
--   emergency_spells (sql/outcomes/emergency_spells.sql), episodes(episode, pseudo_id, service_code, start_date, after_end)
WITH spans AS (
  SELECT
    e.episode,
    e.pseudo_id,
    v.service_code,
    greatest(e.start_date, v.start_date, p.registration_start) AS i_from,
    least(
      e.after_end,
      coalesce(v.end_date + INTERVAL '1 day', e.after_end),
      coalesce(p.registration_end + INTERVAL '1 day', e.after_end),
      coalesce(p.date_of_death + INTERVAL '1 day', e.after_end)
    ) AS i_to
  FROM episodes e
  JOIN services v ON v.pseudo_id = e.pseudo_id
  JOIN patients p ON p.pseudo_id = e.pseudo_id
)
SELECT
  s.episode,
  s.service_code,
  CAST(count(x.pseudo_id) AS DOUBLE) AS admissions_in_service,
  coalesce(sum(x.bed_days), 0.0) AS bed_days_in_service
FROM spans s
JOIN emergency_spells x
  ON x.pseudo_id = s.pseudo_id
  AND x.admission_date >= s.i_from
  AND x.admission_date < s.i_to
GROUP BY s.episode, s.service_code
