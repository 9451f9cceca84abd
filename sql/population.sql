-- The population at $as_of: registered, alive, and (already, by construction of
-- `patients`) without any opt-out. Registration ending on $as_of, or death on
-- $as_of, still counts as in the population, as the contract says.
SELECT pseudo_id, year_of_birth, sex, practice_code, lsoa_code, imd_decile
FROM patients
WHERE registration_start <= $as_of
  AND (registration_end IS NULL OR registration_end >= $as_of)
  AND (date_of_death IS NULL OR date_of_death >= $as_of)
