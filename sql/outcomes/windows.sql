-- Service outcome evaluation, step 5: for every matched episode (an enrolled
-- patient, or their comparison patient, around the enrolled patient's start date),
-- person-time and emergency admissions and bed days in the 365 days before the
-- start date and the 365 days from it, and in the year before that (the placebo
-- test's "before": [start - 730, start - 365)). Person-time starts no earlier than
-- registration and ends at deregistration, death or the end of data ($as_of).
-- Bed days are those of emergency spells admitted in the window (an open spell runs
-- to $as_of).
--
--   emergency_spells (sql/outcomes/emergency_spells.sql), episodes(episode, pseudo_id, placebo_start, before_start, start_date, after_end)
WITH spans AS (
  SELECT
    e.episode,
    e.pseudo_id,
    greatest(e.placebo_start, p.registration_start) AS p_from,
    least(
      e.before_start,
      coalesce(p.registration_end + INTERVAL '1 day', e.before_start),
      coalesce(p.date_of_death + INTERVAL '1 day', e.before_start)
    ) AS p_to,
    greatest(e.before_start, p.registration_start) AS b_from,
    least(
      e.start_date,
      coalesce(p.registration_end + INTERVAL '1 day', e.start_date),
      coalesce(p.date_of_death + INTERVAL '1 day', e.start_date)
    ) AS b_to,
    greatest(e.start_date, p.registration_start) AS a_from,
    least(
      e.after_end,
      coalesce(p.registration_end + INTERVAL '1 day', e.after_end),
      coalesce(p.date_of_death + INTERVAL '1 day', e.after_end)
    ) AS a_to
  FROM episodes e
  JOIN patients p ON p.pseudo_id = e.pseudo_id
)
SELECT
  s.episode,
  CAST(greatest(s.p_to - s.p_from, 0) AS DOUBLE) AS days_placebo,
  CAST(greatest(s.b_to - s.b_from, 0) AS DOUBLE) AS days_before,
  CAST(greatest(s.a_to - s.a_from, 0) AS DOUBLE) AS days_after,
  CAST(count(x.pseudo_id) FILTER (WHERE x.admission_date >= s.p_from AND x.admission_date < s.p_to) AS DOUBLE) AS admissions_placebo,
  CAST(count(x.pseudo_id) FILTER (WHERE x.admission_date >= s.b_from AND x.admission_date < s.b_to) AS DOUBLE) AS admissions_before,
  CAST(count(x.pseudo_id) FILTER (WHERE x.admission_date >= s.a_from AND x.admission_date < s.a_to) AS DOUBLE) AS admissions_after,
  coalesce(sum(x.bed_days) FILTER (WHERE x.admission_date >= s.p_from AND x.admission_date < s.p_to), 0.0) AS bed_days_placebo,
  coalesce(sum(x.bed_days) FILTER (WHERE x.admission_date >= s.b_from AND x.admission_date < s.b_to), 0.0) AS bed_days_before,
  coalesce(sum(x.bed_days) FILTER (WHERE x.admission_date >= s.a_from AND x.admission_date < s.a_to), 0.0) AS bed_days_after
FROM spans s
LEFT JOIN emergency_spells x ON x.pseudo_id = s.pseudo_id
GROUP BY s.episode, s.p_from, s.p_to, s.b_from, s.b_to, s.a_from, s.a_to
