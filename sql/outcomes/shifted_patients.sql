-- Service outcome evaluation, step 3 (risk at each index date, in one pass): the
-- patients of `index_episodes(episode, pseudo_id, person, index_date, year_start,
-- two_years_start, shift_days, year_shift)` (enrolled patients at their start date, and
-- their candidate comparison patients at the same date), one row per episode, with
-- every date moved forward by shift_days ($as_of - index_date) and year_of_birth by
-- year_shift, so that the feature SQL run "at $as_of" over these tables gives each
-- episode's features at its own index date. year_start and two_years_start are the
-- index date less 365 and 730 days, given as dates so that the event joins compare
-- dates instead of doing date arithmetic on every event row; `person` is the patient's
-- integer key in this run, which the event tables join on rather than on the
-- 32-character pseudo_id.
SELECT
  CAST(e.episode AS VARCHAR) AS pseudo_id,
  e.episode AS person,
  p.year_of_birth + e.year_shift AS year_of_birth,
  p.sex,
  p.practice_code,
  p.lsoa_code,
  p.imd_decile,
  CAST(CAST(p.registration_start AS INT) + e.shift_days AS DATE) AS registration_start,
  CAST(CAST(p.registration_end AS INT) + e.shift_days AS DATE) AS registration_end,
  CAST(CAST(p.date_of_death AS INT) + e.shift_days AS DATE) AS date_of_death
FROM index_episodes e
JOIN patients p ON p.person = e.person
