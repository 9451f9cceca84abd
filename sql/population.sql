-- The population at each date of feature_dates (as_of): registered, alive, and
-- (already, by construction of `patients`) without any opt-out. Registration ending
-- on as_of, or death on as_of, still counts as in the population, as the contract
-- says. One row per person and date, with the run's integer key `person` that the
-- feature files group on.
SELECT d.as_of, p.pseudo_id, p.person, p.year_of_birth, p.sex, p.practice_code, p.lsoa_code, p.imd_decile
FROM patients p
JOIN feature_dates d
  ON p.registration_start <= d.as_of
 AND (p.registration_end IS NULL OR p.registration_end >= d.as_of)
 AND (p.date_of_death IS NULL OR p.date_of_death >= d.as_of)
